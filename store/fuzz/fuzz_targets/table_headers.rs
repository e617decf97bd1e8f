//! Fuzzes everything that parses table bytes from disk: the data/checksum file header, the
//! manifest, and the .npy and .safetensors headers of ingest inputs. None may panic.
//! Run: `cargo +nightly fuzz run table_headers` from `store/`.
#![no_main]

use engram_store::ingest::{parse_npy_header, parse_safetensors_header};
use engram_store::table::{DATA_MAGIC, FileHeader, Manifest, SUMS_MAGIC};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = FileHeader::decode(data, DATA_MAGIC);
    let _ = FileHeader::decode(data, SUMS_MAGIC);
    let _ = Manifest::from_json(data);
    let _ = parse_npy_header(data);
    let _ = parse_safetensors_header(data);
});
