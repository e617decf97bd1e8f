//! The tower layer that counts every gRPC request, in front of all services (so requests the
//! token check refuses are counted too): in flight from its arrival; when its response ends,
//! counted by RPC and gRPC status code (from the headers of a trailers-only response, else from
//! the trailers), and its duration recorded. A response dropped before its end (the client went
//! away) counts as CANCELLED. Without metrics the layer passes everything through untouched.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use tower_layer::Layer;
use tower_service::Service;

use super::StoreMetrics;

/// Counts every request into [`StoreMetrics`] (or nothing, built with `None`).
#[derive(Debug, Clone, Default)]
pub struct RpcMetricsLayer {
    metrics: Option<Arc<StoreMetrics>>,
}

impl RpcMetricsLayer {
    /// A layer recording into `metrics`; `None` records nothing.
    pub fn new(metrics: Option<Arc<StoreMetrics>>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`RpcMetricsLayer`] wraps around another.
#[derive(Debug, Clone)]
pub struct RpcMetricsService<S> {
    inner: S,
    metrics: Option<Arc<StoreMetrics>>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RpcMetricsService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = MeteredFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let call = self
            .metrics
            .as_ref()
            .map(|m| m.start_rpc(request.uri().path()));
        MeteredFuture {
            inner: self.inner.call(request),
            call,
        }
    }
}

/// One request being counted: finished once, when its response ends or is dropped.
#[derive(Debug)]
pub(crate) struct RpcCall {
    metrics: Arc<StoreMetrics>,
    rpc: Arc<str>,
    start: Instant,
    code: Option<&'static str>,
}

impl RpcCall {
    pub(crate) fn new(metrics: Arc<StoreMetrics>, rpc: Arc<str>) -> Self {
        Self {
            metrics,
            rpc,
            start: Instant::now(),
            code: None,
        }
    }

    /// Notes the status in `headers` (headers of a trailers-only response, or trailers).
    fn note(&mut self, headers: &http::HeaderMap) {
        if let Some(code) = headers.get("grpc-status") {
            self.code = Some(code_name(code.as_bytes()));
        }
    }
}

impl Drop for RpcCall {
    fn drop(&mut self) {
        let code = self.code.unwrap_or("CANCELLED");
        self.metrics
            .finish_rpc(&self.rpc, code, self.start.elapsed());
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`RpcMetricsService`].
    #[derive(Debug)]
    pub struct MeteredFuture<F> {
        #[pin]
        inner: F,
        call: Option<RpcCall>,
    }
}

impl<F, B, E> Future for MeteredFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<MeteredBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let mut call = this.call.take();
        Poll::Ready(match result {
            Ok(response) => {
                if let Some(call) = &mut call {
                    call.note(response.headers());
                }
                Ok(response.map(|inner| MeteredBody { inner, call }))
            }
            Err(e) => {
                if let Some(call) = &mut call {
                    call.code = Some("UNKNOWN");
                }
                Err(e)
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that finishes its request's count at its end.
    #[derive(Debug)]
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        call: Option<RpcCall>,
    }
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let (Some(trailers), Some(call)) = (f.trailers_ref(), this.call.as_mut()) {
                    call.note(trailers);
                }
            }
            Some(Err(_)) => {
                if let Some(call) = this.call.as_mut() {
                    call.code.get_or_insert("UNKNOWN");
                }
                this.call.take();
            }
            None => {
                if let Some(call) = this.call.as_mut() {
                    // A gRPC response always ends with a status; one without is not gRPC.
                    call.code.get_or_insert("UNKNOWN");
                }
                this.call.take();
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The canonical name of a `grpc-status` value (`OK`, `NOT_FOUND`, ...).
pub(crate) fn code_name(value: &[u8]) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .and_then(|c| NAMES.get(c).copied())
        .unwrap_or("UNKNOWN")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names() {
        assert_eq!(code_name(b"0"), "OK");
        assert_eq!(code_name(b"5"), "NOT_FOUND");
        assert_eq!(code_name(b"16"), "UNAUTHENTICATED");
        assert_eq!(code_name(b"17"), "UNKNOWN");
        assert_eq!(code_name(b"x"), "UNKNOWN");
    }
}
