//! Running the gRPC server: the EmbeddingStore service with grpc.health.v1 (per-table status
//! too) and server reflection, on TCP or a Unix socket, with the limits that keep any client from
//! growing the server's memory without bound or holding its descriptors: request size fitted to
//! the largest valid request, HTTP/2 streams per connection, a cap on connections, keepalive and
//! an idle timeout, and the answer budget held until each answer is sent ([`request_layer`]).
//! Beside it, the local socket ([`local_socket`]) where clients on the same host hand over sealed
//! memfds. Used by `serve`, `demo` and the integration tests (which bind 127.0.0.1:0).
//!
//! While it runs, the engine's version watcher takes in new table versions, and per-table health
//! follows what is served. When the shutdown future resolves the server drains: health turns
//! NOT_SERVING (the server's and every table's), it stops accepting connections (HTTP/2 GOAWAY
//! on those open: clients send no new requests there), lets the requests in flight finish within
//! [`ServerOptions::shutdown_grace`], and returns.

mod connections;
mod listen;
mod local_socket;
mod request_layer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use engram_store_proto::v1::embedding_store_server::EmbeddingStoreServer;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

pub(crate) use connections::ConnTable;
pub use connections::{ConnId, ConnInfo, Peer, TrackedConn};
pub use listen::{ListenAddr, Listener};
pub use local_socket::LocalSocket;

use self::connections::accept_loop;
use self::request_layer::RequestLayer;
use crate::cluster::ClusterService;
use crate::edge::{EdgeOptions, ServerSide, StoreService};
use crate::engine::{Catalog, Engine};

/// Limits and timeouts of the server (besides the engine's own).
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Connections open at once, at most; beyond, a new connection is closed at once. Default
    /// 256.
    pub max_connections: usize,
    /// Concurrent requests (HTTP/2 streams) per connection. Default 32.
    pub max_concurrent_streams: u32,
    /// A connection with no request in flight for this long is closed. Default 60 s.
    pub idle_timeout: Duration,
    /// HTTP/2 keepalive: a ping after this much silence... Default 20 s.
    pub keepalive_interval: Duration,
    /// ...which must be answered within this, or the connection is closed (with the answers it
    /// holds unread). Default 10 s.
    pub keepalive_timeout: Duration,
    /// HTTP/2 receive window of a connection (bytes a client may send ahead). Default 16 MiB.
    pub connection_window: u32,
    /// The local socket for memfd regions, if any.
    pub local_socket: Option<PathBuf>,
    /// TLS, the token check and request metrics in front of every service.
    pub edge: EdgeOptions,
    /// How long a shutdown waits for the requests in flight to finish. Default 10 s.
    pub shutdown_grace: Duration,
    /// The node's cluster membership, if it is in one (epoch checks, `--route`).
    pub cluster: Option<Arc<crate::cluster::ClusterNode>>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            max_connections: 256,
            max_concurrent_streams: 32,
            idle_timeout: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(10),
            connection_window: 16 << 20,
            local_socket: None,
            edge: EdgeOptions::default(),
            shutdown_grace: Duration::from_secs(10),
            cluster: None,
        }
    }
}

/// A server running in the background.
#[derive(Debug)]
pub struct RunningServer {
    /// The address it listens on (TCP; for a Unix socket, its path is in `listen`).
    pub addr: SocketAddr,
    /// What it listens on.
    pub listen: ListenAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Drains the server (health NOT_SERVING, no new connections, requests in flight finished
    /// within the grace period) and waits for it to end.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.await??;
        Ok(())
    }
}

/// Largest request message a client may send when a request may ask for `max_rows` rows:
/// every row id a 10-byte varint (a token id fewer), and 64 KiB for the rest.
pub fn max_request_bytes(max_rows: usize) -> usize {
    max_rows.saturating_mul(10).saturating_add(64 << 10)
}

/// Largest answer: `max_rows` rows of `max_row_bytes` bytes, and 64 KiB for the rest.
pub fn max_answer_bytes(max_rows: usize, max_row_bytes: usize) -> usize {
    max_rows
        .saturating_mul(max_row_bytes)
        .saturating_add(64 << 10)
}

/// Binds `addr` (TCP) and serves `engine` with default options until
/// [`RunningServer::shutdown`].
pub async fn spawn_server(engine: Arc<Engine>, addr: SocketAddr) -> anyhow::Result<RunningServer> {
    spawn_server_with(engine, ListenAddr::Tcp(addr), ServerOptions::default()).await
}

/// Binds `listen` and serves `engine` with `options` until [`RunningServer::shutdown`].
pub async fn spawn_server_with(
    engine: Arc<Engine>,
    listen: ListenAddr,
    options: ServerOptions,
) -> anyhow::Result<RunningServer> {
    let listener = listen.bind()?;
    let addr = listener
        .tcp_addr()
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let listen = listener.addr();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(engine, listener, options, async move {
        let _ = rx.await;
    }));
    Ok(RunningServer {
        addr,
        listen,
        shutdown: Some(tx),
        task,
    })
}

/// Serves `engine` on `listener` (and the local socket, if `options` names one) until
/// `shutdown` resolves.
pub async fn serve(
    engine: Arc<Engine>,
    listener: Listener,
    options: ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let on_close = {
        let engine = Arc::downgrade(&engine);
        Arc::new(move |id: ConnId| {
            if let Some(engine) = engine.upgrade() {
                engine.release_connection(id);
            }
        })
    };
    let holds = {
        let engine = Arc::downgrade(&engine);
        Arc::new(move |id: ConnId| {
            engine
                .upgrade()
                .is_some_and(|engine| engine.connection_holds(id))
        })
    };
    let table = ConnTable::new(on_close, holds);
    table.spawn_idle_reaper(options.idle_timeout, reaper_period(options.idle_timeout));
    let local = match &options.local_socket {
        Some(path) => Some(LocalSocket::bind(
            path,
            engine.clone(),
            table.clone(),
            options.edge.tokens.clone(),
        )?),
        None => None,
    };

    let c = engine.config();
    let store = EmbeddingStoreServer::new(ClusterService::new(
        StoreService::new(
            engine.clone(),
            ServerSide {
                local_socket: options.local_socket.clone(),
                connections: Some(table.clone()),
            },
        ),
        options.cluster.clone(),
    ))
    .max_decoding_message_size(max_request_bytes(c.max_batch_ids))
    // Answers are bounded by max_batch_ids rows and held within the answer budget; a table
    // version swapped in later may have wider rows than those served now.
    .max_encoding_message_size(usize::MAX);

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<EmbeddingStoreServer<StoreService>>()
        .await;
    set_table_health(&health_reporter, &engine.catalog()).await;
    // Per-table health follows what is served; new versions come in from the watcher.
    let health_follows = {
        let mut changes = engine.subscribe();
        let engine = Arc::downgrade(&engine);
        let reporter = health_reporter.clone();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                set_table_health(&reporter, &engine.catalog()).await;
            }
        })
    };
    let watcher = engine.spawn_version_watcher();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(engram_store_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(engram_store_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let (drain_tx, drain_rx) = watch::channel(false);
    let router = options
        .edge
        .server_builder()?
        .tcp_nodelay(true)
        .max_concurrent_streams(Some(options.max_concurrent_streams))
        .http2_keepalive_interval(Some(options.keepalive_interval))
        .http2_keepalive_timeout(Some(options.keepalive_timeout))
        .initial_stream_window_size(Some(options.connection_window.min(8 << 20)))
        .initial_connection_window_size(Some(options.connection_window))
        .max_frame_size(Some((1 << 24) - 1))
        .layer(RequestLayer {
            table: table.clone(),
            draining: drain_rx.clone(),
        })
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(store);

    // Health first: the server's and every table's turn NOT_SERVING before the listener closes
    // and GOAWAY goes out, so watchers and load balancers learn of the drain from health.
    let drain = {
        let (engine, reporter, table) = (engine.clone(), health_reporter.clone(), table.clone());
        async move {
            shutdown.await;
            reporter
                .set_not_serving::<EmbeddingStoreServer<StoreService>>()
                .await;
            reporter
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            for t in engine.tables() {
                reporter
                    .set_service_status(
                        table_health_name(&t.manifest().name),
                        tonic_health::ServingStatus::NotServing,
                    )
                    .await;
            }
            tracing::info!(
                requests_in_flight = table.requests_in_flight(),
                connections = table.len(),
                "draining: health NOT_SERVING, no new connections, finishing the requests in flight"
            );
            let _ = drain_tx.send(true);
        }
    };
    let serving = async {
        match listener {
            Listener::Tcp(l) => {
                let incoming =
                    ReceiverStream::new(accept_loop(l, table.clone(), options.max_connections));
                router.serve_with_incoming_shutdown(incoming, drain).await
            }
            Listener::Unix(l, _) => {
                let incoming =
                    ReceiverStream::new(accept_loop(l, table.clone(), options.max_connections));
                router.serve_with_incoming_shutdown(incoming, drain).await
            }
        }
    };
    tokio::pin!(serving);
    let mut drained = drain_rx;
    let drain_started = async move {
        let _ = drained.wait_for(|d| *d).await;
    };
    let result = tokio::select! {
        result = &mut serving => result,
        () = drain_started => {
            let started = std::time::Instant::now();
            match tokio::time::timeout(options.shutdown_grace, &mut serving).await {
                Ok(result) => {
                    tracing::info!(took_ms = started.elapsed().as_millis() as u64,
                        "drained: every request in flight finished");
                    result
                }
                Err(_) => {
                    tracing::warn!(
                        requests_in_flight = table.requests_in_flight(),
                        grace_s = options.shutdown_grace.as_secs_f64(),
                        "the shutdown grace period is over: requests still in flight are cut off"
                    );
                    Ok(())
                }
            }
        }
    };
    if let Some(w) = watcher {
        w.abort();
    }
    health_follows.abort();
    drop(local);
    result?;
    Ok(())
}

/// Sets every table's health: SERVING for those served, NOT_SERVING for those found but not
/// served.
async fn set_table_health(reporter: &tonic_health::server::HealthReporter, catalog: &Catalog) {
    // Per-table health: "engram_store.v1.EmbeddingStore/table/NAME".
    for t in catalog.tables() {
        reporter
            .set_service_status(
                table_health_name(&t.manifest().name),
                tonic_health::ServingStatus::Serving,
            )
            .await;
    }
    for u in catalog.unavailable().iter().filter(|u| u.kind == "table") {
        reporter
            .set_service_status(
                table_health_name(&u.name),
                tonic_health::ServingStatus::NotServing,
            )
            .await;
    }
}

/// Health service name of a table.
pub fn table_health_name(table: &str) -> String {
    format!("engram_store.v1.EmbeddingStore/table/{table}")
}

fn reaper_period(idle: Duration) -> Duration {
    (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(10))
}
