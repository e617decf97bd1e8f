//! A tower layer around every RPC: marks its connection busy until the response has been sent
//! (so the idle reaper never closes a connection with work in flight), and holds the memory
//! reservation a handler made for its answer ([`AnswerReservation`], put in the response's
//! extensions, with the admission of its rows) until the answer's last piece has been handed to
//! HTTP/2 (its trailers follow; the client cannot have the whole answer before), or the client
//! went away: a client that never reads its answers cannot make the server hold more than the
//! in-flight budget.
//!
//! For that, the body hands its data to HTTP/2 in pieces of at most [`PIECE`] bytes: HTTP/2
//! asks for the next piece only when the client's window has room, so an answer a client does not
//! read stays here, reserved, instead of moving whole into HTTP/2's send buffer, where the
//! reservation could no longer see it.
//!
//! When the server drains (a graceful shutdown), a `grpc.health.v1.Health/Watch` stream, which
//! would otherwise never end, ends (status OK) once it has sent what it had, the NOT_SERVING
//! the drain begins with included: the drain then waits only for real requests.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::watch;
use tower::{Layer, Service};

use super::connections::{ActiveRequest, ConnInfo, ConnTable};
use crate::engine::AnswerReservation;

/// The path of the health service's watch stream.
const HEALTH_WATCH: &str = "/grpc.health.v1.Health/Watch";

/// The layer.
#[derive(Debug, Clone)]
pub(crate) struct RequestLayer {
    pub(crate) table: Arc<ConnTable>,
    /// Turns true when the server drains.
    pub(crate) draining: watch::Receiver<bool>,
}

impl<S> Layer<S> for RequestLayer {
    type Service = RequestService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestService {
            inner,
            table: self.table.clone(),
            draining: self.draining.clone(),
        }
    }
}

/// The service the layer makes.
#[derive(Debug, Clone)]
pub(crate) struct RequestService<S> {
    inner: S,
    table: Arc<ConnTable>,
    draining: watch::Receiver<bool>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody> Service<http::Request<ReqBody>> for RequestService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let active = req
            .extensions()
            .get::<ConnInfo>()
            .map(|info| self.table.request_started(info));
        let ends_on_drain = (req.uri().path() == HEALTH_WATCH).then(|| {
            let mut draining = self.draining.clone();
            let drained: BoxFuture<()> = Box::pin(async move {
                let _ = draining.wait_for(|d| *d).await;
            });
            drained
        });
        // The clone is ready (tower's usual dance): take it, leave the fresh one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let mut response = inner.call(req).await?;
            let reservation = response.extensions_mut().remove::<AnswerReservation>();
            Ok(response.map(|body| {
                let mut held = HeldBody::new(body, (active, reservation));
                held.ends_on_drain = ends_on_drain;
                tonic::body::Body::new(held)
            }))
        })
    }
}

/// Largest piece of an answer handed to HTTP/2 at once.
const PIECE: usize = 256 << 10;

/// A response body holding what must live until it has been sent.
struct HeldBody {
    inner: tonic::body::Body,
    /// Data taken from `inner` and not yet handed on.
    rest: Bytes,
    _active: Option<ActiveRequest>,
    /// Given back when the answer's last frame is handed on (the client cannot have it all
    /// before), or when the body is dropped unsent.
    reservation: Option<AnswerReservation>,
    /// For a stream that never ends by itself: resolves when the server drains, and the stream
    /// then ends.
    ends_on_drain: Option<BoxFuture<()>>,
    /// Set once the stream has been ended for a drain.
    ended: bool,
}

impl HeldBody {
    fn new(
        inner: tonic::body::Body,
        (active, reservation): (Option<ActiveRequest>, Option<AnswerReservation>),
    ) -> Self {
        Self {
            inner,
            rest: Bytes::new(),
            _active: active,
            reservation,
            ends_on_drain: None,
            ended: false,
        }
    }

    fn piece(&mut self) -> Frame<Bytes> {
        let n = self.rest.len().min(PIECE);
        Frame::data(self.rest.split_to(n))
    }
}

impl Body for HeldBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        if !self.rest.is_empty() {
            return Poll::Ready(Some(Ok(self.piece())));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) if data.len() > PIECE => {
                    self.rest = data;
                    Poll::Ready(Some(Ok(self.piece())))
                }
                Ok(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                Err(frame) => {
                    // Trailers: every byte of the answer has been handed on.
                    self.reservation = None;
                    Poll::Ready(Some(Ok(frame)))
                }
            },
            Poll::Ready(None) => {
                self.reservation = None;
                Poll::Ready(None)
            }
            Poll::Pending => match self.ends_on_drain.as_mut().map(|d| d.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => {
                    self.ended = true;
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                    Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                }
                _ => Poll::Pending,
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && (self.ended || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        // The answer is handed on in pieces; its total is not promised.
        SizeHint::default()
    }
}
