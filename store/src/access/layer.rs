//! The tower layer that checks bearer tokens before any service sees a request: a request to
//! an open service (health, reflection) passes; otherwise `authorization: Bearer TOKEN` must name
//! a known token (else UNAUTHENTICATED) of a role the RPC allows (else PERMISSION_DENIED). The
//! refusal is a trailers-only gRPC response, written without calling the service. Without a
//! token set every request passes.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::Either;
use tower_layer::Layer;
use tower_service::Service;

use super::rpc_access::{Needs, needs, rpc_name};
use super::tokens::TokenSet;

/// Checks tokens against a [`TokenSet`] (or lets everything through, built with `None`).
#[derive(Debug, Clone, Default)]
pub struct AuthLayer {
    tokens: Option<Arc<TokenSet>>,
}

impl AuthLayer {
    /// A layer checking against `tokens`; `None` checks nothing.
    pub fn new(tokens: Option<Arc<TokenSet>>) -> Self {
        Self { tokens }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around another.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    tokens: Option<Arc<TokenSet>>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for AuthService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<std::future::Ready<Result<S::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        match self.refusal(&request) {
            None => Either::Right(self.inner.call(request)),
            Some(status) => Either::Left(std::future::ready(Ok(status.into_http()))),
        }
    }
}

impl<S> AuthService<S> {
    /// Why `request` is refused, or `None` if it may go on.
    fn refusal<B>(&self, request: &http::Request<B>) -> Option<tonic::Status> {
        let tokens = self.tokens.as_ref()?;
        let path = request.uri().path();
        let Needs::Role(needed) = needs(path) else {
            return None;
        };
        let Some(presented) = bearer_token(request.headers()) else {
            return Some(tonic::Status::unauthenticated(
                "missing token: send `authorization: Bearer TOKEN`",
            ));
        };
        match tokens.role_of(presented) {
            None => Some(tonic::Status::unauthenticated("unknown token")),
            Some(role) if role < needed => Some(tonic::Status::permission_denied(format!(
                "{} needs an admin token; this is a {} token",
                rpc_name(path),
                role.name()
            ))),
            Some(_) => None,
        }
    }
}

/// The token of an `authorization: Bearer TOKEN` header (scheme case-insensitive).
fn bearer_token(headers: &http::HeaderMap) -> Option<&[u8]> {
    let value = headers.get(http::header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = token.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        let mut h = http::HeaderMap::new();
        assert_eq!(bearer_token(&h), None);
        h.insert("authorization", "Bearer abc".parse().expect("value"));
        assert_eq!(bearer_token(&h), Some(&b"abc"[..]));
        h.insert("authorization", "bearer  abc ".parse().expect("value"));
        assert_eq!(bearer_token(&h), Some(&b"abc"[..]));
        h.insert("authorization", "Basic abc".parse().expect("value"));
        assert_eq!(bearer_token(&h), None);
        h.insert("authorization", "Bearer ".parse().expect("value"));
        assert_eq!(bearer_token(&h), None);
    }
}
