//! TLS for the gRPC listener (rustls through tonic): the server's certificate chain and key
//! (`--tls-cert`, `--tls-key`, PEM), and with `--tls-client-ca` mutual TLS: a client must show a
//! certificate signed by that CA or the handshake fails.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// The PEM files of a TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key of the leaf.
    pub key: PathBuf,
    /// CA that client certificates must chain to (mutual TLS); `None` accepts any client.
    pub client_ca: Option<PathBuf>,
}

/// TLS settings that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("read {what} {path}: {source}")]
    Read {
        /// Which file (`certificate`, `key`, `client CA`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Only one of the certificate and the key was given, or a client CA without them.
    #[error("{0}")]
    Incomplete(&'static str),
    /// tonic refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

impl TlsFiles {
    /// The files named by the three flags, `None` when TLS is off (no flag given); an error when
    /// only some were given.
    pub fn from_flags(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        client_ca: Option<PathBuf>,
    ) -> Result<Option<Self>, TlsError> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(Self {
                cert,
                key,
                client_ca,
            })),
            (None, None) if client_ca.is_none() => Ok(None),
            (None, None) => Err(TlsError::Incomplete(
                "--tls-client-ca needs --tls-cert and --tls-key",
            )),
            _ => Err(TlsError::Incomplete("--tls-cert and --tls-key go together")),
        }
    }

    /// Reads the files into tonic's server TLS configuration (the PEM is checked when the server
    /// starts: tonic parses it then).
    pub fn server_config(&self) -> Result<ServerTlsConfig, TlsError> {
        let cert = read("certificate", &self.cert)?;
        let key = read("key", &self.key)?;
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(Certificate::from_pem(read("client CA", ca)?));
        }
        Ok(config)
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}
