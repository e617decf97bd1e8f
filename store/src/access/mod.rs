//! Who may call the server: TLS on the listener ([`TlsFiles`], mutual with a client CA) and
//! bearer tokens with a role each ([`TokenSet`]), checked by a tower layer in front of every
//! service ([`AuthLayer`]) against the role each RPC needs.

mod layer;
mod rpc_access;
mod tls;
mod tokens;

pub use layer::{AuthLayer, AuthService};
pub use tls::{TlsError, TlsFiles};
pub use tokens::{Role, TokenFileError, TokenSet};
