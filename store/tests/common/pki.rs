//! Certificates made with rcgen for the TLS tests: a CA, a server certificate it signed for
//! `localhost` and `127.0.0.1`, and a client certificate, as PEM; the server's files written out.

use engram_store::access::TlsFiles;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A CA and certificates it signed, as PEM.
pub struct Pki {
    pub ca: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
}

fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("CA cert");
    (params, key, cert.pem())
}

fn leaf(names: &[&str], issuer: &Issuer<'_, KeyPair>) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .expect("params");
    let cert = params.signed_by(&key, issuer).expect("sign");
    (cert.pem(), key.serialize_pem())
}

/// A CA named `name`, a server certificate for `localhost` and `127.0.0.1`, and a client one.
pub fn pki(name: &str) -> Pki {
    let (params, key, ca) = ca(name);
    let issuer = Issuer::new(params, key);
    let (server_cert, server_key) = leaf(&["localhost", "127.0.0.1"], &issuer);
    let (client_cert, client_key) = leaf(&["inference-worker"], &issuer);
    Pki {
        ca,
        server_cert,
        server_key,
        client_cert,
        client_key,
    }
}

/// Writes the server's PEM files and returns its TLS settings.
pub fn tls_files(dir: &std::path::Path, pki: &Pki, client_ca: Option<&str>) -> TlsFiles {
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write pem");
        p
    };
    TlsFiles {
        cert: write("server.crt", &pki.server_cert),
        key: write("server.key", &pki.server_key),
        client_ca: client_ca.map(|ca| write("client-ca.crt", ca)),
    }
}
