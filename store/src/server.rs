//! Running the gRPC server: the EmbeddingStore service with message limits that fit the largest
//! batch, grpc.health.v1, server reflection, and graceful shutdown. Used by `serve`, `demo` and
//! the integration tests (which bind 127.0.0.1:0).

use std::net::SocketAddr;
use std::sync::Arc;

use engram_store_proto::v1::embedding_store_server::EmbeddingStoreServer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

use crate::edge::{EdgeOptions, StoreService};
use crate::engine::Engine;

/// A server running in the background.
#[derive(Debug)]
pub struct RunningServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Stops accepting, finishes requests in flight and waits for the server to end.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.await??;
        Ok(())
    }
}

/// Largest message either side may send, for `max_ids` ids of `max_row_bytes` bytes.
pub fn max_message_bytes(max_ids: usize, max_row_bytes: usize) -> usize {
    // ids are varints of at most 10 bytes; rows are max_row_bytes each; 64 KiB for the rest.
    max_ids
        .saturating_mul(max_row_bytes.max(10))
        .saturating_add(64 << 10)
}

/// Binds `addr` and serves `engine` until [`RunningServer::shutdown`].
pub async fn spawn_server(engine: Arc<Engine>, addr: SocketAddr) -> anyhow::Result<RunningServer> {
    spawn_server_with(engine, addr, EdgeOptions::default()).await
}

/// [`spawn_server`] with TLS, tokens or metrics.
pub async fn spawn_server_with(
    engine: Arc<Engine>,
    addr: SocketAddr,
    edge: EdgeOptions,
) -> anyhow::Result<RunningServer> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_on_with(engine, listener, edge, async move {
        let _ = rx.await;
    }));
    Ok(RunningServer {
        addr,
        shutdown: Some(tx),
        task,
    })
}

/// Serves `engine` on `listener` until `shutdown` resolves.
pub async fn serve_on(
    engine: Arc<Engine>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_on_with(engine, listener, EdgeOptions::default(), shutdown).await
}

/// [`serve_on`] with TLS, tokens or metrics.
pub async fn serve_on_with(
    engine: Arc<Engine>,
    listener: TcpListener,
    edge: EdgeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let limit = max_message_bytes(engine.config().max_batch_ids, engine.max_row_bytes());
    let store = EmbeddingStoreServer::new(StoreService::new(engine))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<EmbeddingStoreServer<StoreService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(engram_store_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1();
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(engram_store_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha();

    // Server::tcp_nodelay only applies to listeners tonic binds itself: set it on each accepted
    // socket, or small responses wait on Nagle's algorithm (tens of ms at batch 16).
    let incoming = tokio_stream::StreamExt::map(TcpListenerStream::new(listener), |conn| {
        if let Ok(stream) = &conn {
            let _ = stream.set_nodelay(true);
        }
        conn
    });
    edge.server_builder()?
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(32 << 20))
        .max_frame_size(Some((1 << 24) - 1))
        .add_service(health_service)
        .add_service(reflection?)
        .add_service(reflection_alpha?)
        .add_service(store)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
