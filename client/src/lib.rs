//! The Rust client of engram-store.
//!
//! ```no_run
//! # async fn demo() -> Result<(), engram_store_client::ClientError> {
//! let client = engram_store_client::Client::connect("http://127.0.0.1:50051").await?;
//! let rows = client.lookup("demo", &[1, 5, 9]).await?;
//! assert_eq!(rows.len(), 3);
//! let first: &[u8] = rows.row(0);
//! # let _ = first; Ok(()) }
//! ```

mod client;
mod error;
mod rows;

pub use client::{BearerToken, Client, ClientBuilder, Stub, token_sequence};
pub use engram_store_proto::v1 as proto;
pub use error::ClientError;
pub use rows::Rows;
