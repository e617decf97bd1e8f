//! Generates the engram_store.v1 messages and stubs with a vendored protoc, so a fresh machine
//! needs no protoc install, and writes the descriptor set that server reflection serves.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded here; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .bytes(".engram_store.v1")
        // Undecodable messages are INVALID_ARGUMENT, not INTERNAL (src/codec.rs).
        .codec_path("crate::codec::StrictCodec")
        .file_descriptor_set_path(out_dir.join("engram_store_v1_descriptor.bin"))
        .compile_protos(&["engram_store/v1/store.proto"], &["."])?;
    println!("cargo:rerun-if-changed=engram_store/v1/store.proto");
    Ok(())
}
