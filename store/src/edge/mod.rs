//! The gRPC edge, kept thin: messages are converted once into validated queries
//! ([`convert`]), each RPC calls one engine method ([`service`]), and errors become statuses in
//! one place ([`status`]). [`EdgeOptions`] puts TLS, the token check and request metrics in
//! front of every service.

mod convert;
mod file_stream;
mod options;
mod service;
mod status;

pub use file_stream::FileStream;
pub use options::{EdgeLayers, EdgeOptions};
pub use service::{ServerSide, StoreService};
pub(crate) use status::code_of as status_code_of;
