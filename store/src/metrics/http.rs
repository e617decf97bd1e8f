//! The `/metrics` endpoint: a small HTTP/1 server (hyper) that renders [`StoreMetrics`] on each
//! `GET /metrics`, and drains histogram samples every few seconds between scrapes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{MetricsError, StoreMetrics};
use crate::engine::Engine;

/// How often recorded histogram samples are drained when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The Prometheus text format's content type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `/metrics` endpoint running in the background; stops when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    accept: JoinHandle<()>,
    upkeep: JoinHandle<()>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.accept.abort();
        self.upkeep.abort();
    }
}

/// Binds `addr` and serves `metrics` of `engine` on `GET /metrics`.
pub async fn spawn_metrics_server(
    metrics: Arc<StoreMetrics>,
    engine: Arc<Engine>,
    addr: SocketAddr,
) -> Result<MetricsServer, MetricsError> {
    let bind = |source| MetricsError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind)?;
    let addr = listener.local_addr().map_err(bind)?;
    let upkeep = {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(UPKEEP_EVERY);
            loop {
                every.tick().await;
                metrics.run_upkeep();
            }
        })
    };
    let accept = tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accept on the metrics listener");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let metrics = metrics.clone();
            let engine = engine.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let response = respond(&metrics, &engine, &request);
                    async move { Ok::<_, Infallible>(response) }
                });
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(error = %e, "metrics connection");
                }
            });
        }
    });
    Ok(MetricsServer {
        addr,
        accept,
        upkeep,
    })
}

fn respond<B>(
    metrics: &StoreMetrics,
    engine: &Engine,
    request: &http::Request<B>,
) -> http::Response<String> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&http::Method::GET, "/metrics") => {
            (http::StatusCode::OK, TEXT_FORMAT, metrics.render(engine))
        }
        (_, "/metrics") => (
            http::StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET /metrics\n".to_string(),
        ),
        _ => (
            http::StatusCode::NOT_FOUND,
            "text/plain",
            "not found: metrics are on /metrics\n".to_string(),
        ),
    };
    let mut response = http::Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}
