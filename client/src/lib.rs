//! The Rust client of engram-store.
//!
//! ```no_run
//! # async fn demo() -> Result<(), engram_store_client::ClientError> {
//! let client = engram_store_client::Client::connect("http://127.0.0.1:50051").await?;
//! let rows = client.lookup("demo", &[1, 5, 9]).await?;
//! assert_eq!(rows.len(), 3);
//! let first: &[u8] = rows.row(0);
//! // fp8 rows with ue8m0 block scales (DeepSeek-V4.1 Engram tables) -> bf16, as vLLM does:
//! let info = client.describe_table("v41.layer14").await?;
//! let packed = client.lookup("v41.layer14", &[7]).await?;
//! if let Some(format) = &info.row_format {
//!     let bf16_bits: Vec<u16> = packed.dequantize_bf16(format)?;
//!     assert_eq!(bf16_bits.len(), packed.row_dim() as usize);
//! }
//! # let _ = first; Ok(()) }
//! ```

mod channel;
mod client;
pub mod cluster;
mod dequant;
mod error;
pub mod fd_passing;
mod mapped_rows;
mod rows;
mod security;
mod shared_memory;

pub use channel::{Channel, ChannelTarget, SlotDone};
pub use client::{
    BearerToken, Client, ClientBuilder, NgramsRequest, Stub, token_sequence, token_sequence_dead,
};
pub use cluster::{ClusterClient, ClusterSettings};
pub use dequant::{dequantize_block_scaled_row, e4m3_to_f32, f32_to_bf16_bits, ue8m0_to_f32};
pub use engram_store_proto::v1 as proto;
pub use error::ClientError;
pub use mapped_rows::MappedRows;
pub use rows::Rows;
pub use security::Security;
pub use shared_memory::{LocalConnection, Registered, SharedMemoryRegion, sealed_memfd};
