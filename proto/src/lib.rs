//! The slim protocol crate shared by the engram-store server and its clients: the generated
//! `engram_store.v1` messages, the `EmbeddingStore` client and server stubs, and the encoded file
//! descriptor set used for gRPC server reflection, and the codec they use ([`codec`]: decode
//! errors are INVALID_ARGUMENT). Nothing else lives here.

#![allow(missing_docs, unreachable_pub, missing_debug_implementations)]

pub mod codec;

/// Messages and stubs of package `engram_store.v1`.
pub mod v1 {
    tonic::include_proto!("engram_store.v1");
}

/// Encoded `FileDescriptorSet` of the engram_store.v1 protos, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("engram_store_v1_descriptor");
