//! What wraps the gRPC services, in front of all of them: TLS on the listener, request metrics
//! (outermost, so refused requests are counted) and the token check. [`EdgeOptions`] makes the
//! tonic server builder the server then adds its services to; all off by default.

use std::sync::Arc;

use tonic::transport::Server;
use tower_layer::{Identity, Stack};

use crate::access::{AuthLayer, TlsError, TlsFiles, TokenSet};
use crate::metrics::{RpcMetricsLayer, StoreMetrics};

/// The layers of [`EdgeOptions::server_builder`]: metrics outside, the token check inside.
pub type EdgeLayers = Stack<AuthLayer, Stack<RpcMetricsLayer, Identity>>;

/// TLS, tokens and metrics of a server (each `None`: off).
#[derive(Debug, Clone, Default)]
pub struct EdgeOptions {
    /// TLS on the listener.
    pub tls: Option<TlsFiles>,
    /// Tokens every non-health request must carry.
    pub tokens: Option<Arc<TokenSet>>,
    /// Where requests are counted.
    pub metrics: Option<Arc<StoreMetrics>>,
}

impl EdgeOptions {
    /// A tonic server builder with TLS and the layers set.
    pub fn server_builder(&self) -> Result<Server<EdgeLayers>, TlsError> {
        let mut builder = Server::builder();
        if let Some(tls) = &self.tls {
            builder = builder
                .tls_config(tls.server_config()?)
                .map_err(|e| TlsError::Config(e.to_string()))?;
        }
        Ok(builder
            .layer(RpcMetricsLayer::new(self.metrics.clone()))
            .layer(AuthLayer::new(self.tokens.clone())))
    }
}
