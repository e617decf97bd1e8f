//! How a client reaches a server: TLS (the CA it trusts, a client certificate for mutual TLS,
//! the name the server's certificate must carry) and a bearer token. Shared by
//! [`crate::ClientBuilder`] and the cluster client's connections to its nodes, so a cluster whose
//! nodes require TLS and tokens is reached the same way as one server.

use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::client::BearerToken;
use crate::error::ClientError;

/// TLS and token settings of a connection (default: plaintext, no token).
#[derive(Clone, Default)]
pub struct Security {
    /// CA certificate(s) (PEM) to trust; set, the connection uses TLS.
    pub tls_ca_pem: Option<Vec<u8>>,
    /// Client certificate chain and key (PEM), for servers that require one (mutual TLS).
    pub tls_identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// The name the server's certificate must carry (default: the address's host).
    pub tls_domain: Option<String>,
    /// Sent as `authorization: Bearer TOKEN` with every call.
    pub token: Option<String>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key or the token.
        f.debug_struct("Security")
            .field("tls", &self.tls())
            .field("client_certificate", &self.tls_identity_pem.is_some())
            .field("tls_domain", &self.tls_domain)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Security {
    /// True when connections use TLS.
    pub fn tls(&self) -> bool {
        self.tls_ca_pem.is_some() || self.tls_identity_pem.is_some()
    }

    /// The endpoint of `addr` (`host:port`, or a URI): `https://` with TLS configured, or
    /// `http://`.
    pub(crate) fn endpoint(&self, addr: &str) -> Result<Endpoint, ClientError> {
        let tls = self.tls();
        let uri = if addr.contains("://") {
            addr.to_string()
        } else if tls {
            format!("https://{addr}")
        } else {
            format!("http://{addr}")
        };
        let refuse = |message: String| ClientError::Connect {
            addr: addr.to_string(),
            message,
        };
        if tls && !uri.starts_with("https://") {
            return Err(refuse("TLS needs an https:// address".into()));
        }
        let endpoint = Endpoint::from_shared(uri).map_err(|e| refuse(e.to_string()))?;
        if !tls {
            return Ok(endpoint);
        }
        let Some(ca) = &self.tls_ca_pem else {
            return Err(refuse("TLS needs the server's CA (tls_ca_pem)".into()));
        };
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        if let Some((cert, key)) = &self.tls_identity_pem {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(domain) = &self.tls_domain {
            config = config.domain_name(domain.clone());
        }
        endpoint
            .tls_config(config)
            .map_err(|e| refuse(e.to_string()))
    }

    /// The interceptor adding the token (none without one).
    pub(crate) fn bearer(&self, addr: &str) -> Result<BearerToken, ClientError> {
        let value = self
            .token
            .as_deref()
            .map(|t| MetadataValue::try_from(format!("Bearer {t}")))
            .transpose()
            .map_err(|_| ClientError::Connect {
                addr: addr.to_string(),
                message: "the token is not printable ASCII".into(),
            })?;
        Ok(BearerToken(value))
    }
}
