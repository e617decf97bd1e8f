//! Shared by the integration tests: tables with random content and their in-memory model, and
//! a real server on 127.0.0.1:0; a small Engram layout and `.npy` writing for the n-gram tests.

#![allow(dead_code, unreachable_pub)]

pub mod pki;

use std::path::Path;
use std::sync::Arc;

use engram_store::engine::{Engine, EngineConfig};
use engram_store::server::{ListenAddr, RunningServer, ServerOptions, spawn_server_with};
use engram_store::table::{DType, TableSpec, TableWriter};
use engram_store_cache::io::IoEngineKind;
use rand::{Rng, SeedableRng};

/// A table's rows as one buffer: the model a served table is checked against.
pub struct Model {
    pub rows: u64,
    pub row_bytes: usize,
    pub bytes: Vec<u8>,
}

impl Model {
    pub fn row(&self, id: u64) -> &[u8] {
        &self.bytes[id as usize * self.row_bytes..(id as usize + 1) * self.row_bytes]
    }
}

/// Writes a table of random bytes and returns its model.
pub fn random_table(
    data: &Path,
    name: &str,
    dtype: DType,
    dim: u32,
    rows: u64,
    block_size: u32,
    seed: u64,
) -> Model {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let row_bytes = dim as usize * dtype.size();
    let mut bytes = vec![0u8; rows as usize * row_bytes];
    rng.fill(&mut bytes[..]);
    let mut spec = TableSpec::new(name, dtype, dim, rows);
    spec.block_size = block_size;
    let mut w = TableWriter::create(data, spec).expect("create table");
    w.push_rows(&bytes).expect("push rows");
    w.finish().expect("finish table");
    Model {
        rows,
        row_bytes,
        bytes,
    }
}

/// Starts a server over `data`.
pub async fn start(
    data: &Path,
    ram: u64,
    io: IoEngineKind,
) -> (Arc<Engine>, RunningServer, engram_store_client::Client) {
    let mut c = EngineConfig::new(data);
    c.ram_cache_bytes = ram;
    c.io_engine = io;
    c.queue_depth = 32;
    c.max_batch_ids = 10_000;
    start_with(c).await
}

/// Starts a server with the engine configuration `c` (a client splits batches at 10,000 ids).
pub async fn start_with(
    c: EngineConfig,
) -> (Arc<Engine>, RunningServer, engram_store_client::Client) {
    let engine = Arc::new(Engine::open(c).expect("open engine"));
    let server = spawn_server_with(
        engine.clone(),
        ListenAddr::Tcp("127.0.0.1:0".parse().expect("addr")),
        ServerOptions {
            local_socket: Some(local_socket_path()),
            ..ServerOptions::default()
        },
    )
    .await
    .expect("start server");
    let client = engram_store_client::Client::builder(format!("http://{}", server.addr))
        .max_batch_ids(10_000)
        .retries(0)
        .connect()
        .await
        .expect("connect");
    (engine, server, client)
}

/// True when io_uring works here (it may be blocked by seccomp in containers).
pub fn uring_available() -> bool {
    engram_store_cache::io::UringEngine::start(Default::default()).is_ok()
}

/// A fresh path for a server's local socket.
pub fn local_socket_path() -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("engram-test-{}-{n}.sock", std::process::id()))
}

/// A small layout that passes validation: 2 layers, n-grams up to 3, 4 heads per order, primes
/// just above 1000, row_dim 8.
pub const SMALL_LAYOUT: &str = r#"{
  "compressed_vocab_size": 500, "pad_id": 2, "max_ngram_size": 3, "n_head_per_ngram": 4,
  "row_dim": 8,
  "layers": [
    {"layer_id": 1, "multipliers": [76993395940407, 4862694818241, 36129212583461],
     "primes": [[1009, 1013, 1019, 1021], [1031, 1033, 1039, 1049]]},
    {"layer_id": 3, "multipliers": [1234567891011, 98765432109877, 55555555555557],
     "primes": [[1051, 1061, 1063, 1069], [1087, 1091, 1093, 1097]]}
  ]
}"#;

/// A 1-D int64 `.npy` file.
pub fn npy_i64(values: &[i64]) -> Vec<u8> {
    let mut header = format!(
        "{{'descr': '<i8', 'fortran_order': False, 'shape': ({},), }}",
        values.len()
    );
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Writes [`SMALL_LAYOUT`] (`layout.json`) and a compression map of `raw_vocab` ids (`map.npy`,
/// raw r -> r * 7919 mod `vocab`) into `dir`; returns their paths.
pub fn write_small_group_inputs(
    dir: &Path,
    raw_vocab: u32,
    vocab: u32,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let layout = dir.join("layout.json");
    let map = dir.join("map.npy");
    std::fs::write(&layout, SMALL_LAYOUT).expect("write layout");
    let ids: Vec<i64> = (0..i64::from(raw_vocab))
        .map(|r| r * 7919 % i64::from(vocab))
        .collect();
    std::fs::write(&map, npy_i64(&ids)).expect("write map");
    (layout, map)
}
