//! The gRPC edge, kept thin: messages are converted once into validated queries
//! ([`convert`]), each RPC calls one engine method ([`service`]), and errors become statuses in
//! one place ([`status`]).

mod convert;
mod service;
mod status;

pub use service::{ServerSide, StoreService};
pub(crate) use status::code_of as status_code_of;
