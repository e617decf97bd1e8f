//! `engram-bench ngrams` end to end on a toy: a small synthetic Engram group served on
//! 127.0.0.1:0 and a token trace of three documents; the benchmark must check its requests byte
//! for byte (LookupNgrams against Lookup of the locally hashed ids), time both paths and report
//! rows per request, runs and a ratio.

use std::path::Path;
use std::sync::Arc;

use engram_store::engine::{Engine, EngineConfig};
use engram_store::group::{GroupSource, create_group};
use engram_store::ingest::WriteOptions;
use engram_store::server::spawn_server;
use engram_store::table::DType;
use engram_store_bench::ngrams::{NgramsArgs, run};
use engram_store_cache::io::IoEngineKind;

/// 1 layer, n-grams up to 3, 4 heads per order (8 rows per position), primes just above 1000.
const LAYOUT: &str = r#"{
  "compressed_vocab_size": 500, "pad_id": 2, "max_ngram_size": 3, "n_head_per_ngram": 4,
  "row_dim": 8,
  "layers": [
    {"layer_id": 4, "multipliers": [76993395940407, 4862694818241, 36129212583461],
     "primes": [[1009, 1013, 1019, 1021], [1031, 1033, 1039, 1049]]}
  ]
}"#;
const RAW_VOCAB: u32 = 1500;

/// A 1-D int64 `.npy` file.
fn npy_i64(values: &[i64]) -> Vec<u8> {
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

fn write_le<T: Copy, const N: usize>(path: &Path, values: &[T], to: fn(T) -> [u8; N]) {
    let bytes: Vec<u8> = values.iter().flat_map(|&v| to(v)).collect();
    std::fs::write(path, bytes).expect("write trace file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benchmark_checks_and_times_both_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, layout, map) = (
        dir.path().join("data"),
        dir.path().join("layout.json"),
        dir.path().join("map.npy"),
    );
    std::fs::write(&layout, LAYOUT).expect("write layout");
    let ids: Vec<i64> = (0..i64::from(RAW_VOCAB)).map(|r| r * 7919 % 500).collect();
    std::fs::write(&map, npy_i64(&ids)).expect("write map");
    let source = GroupSource::Synth {
        dtype: DType::Bf16,
        seed: 5,
    };
    create_group(
        &data,
        "g",
        &layout,
        &map,
        &source,
        &WriteOptions::default(),
        None,
    )
    .expect("create group");

    // Three documents of 700, 300 and 1100 tokens.
    let tokens: Vec<u32> = (0..2100u32).map(|t| t * 37 % RAW_VOCAB).collect();
    let trace = dir.path().join("toy.tokens.u32");
    write_le(&trace, &tokens, u32::to_le_bytes);
    write_le(
        &dir.path().join("toy.docs.u64"),
        &[0u64, 700, 1000, 2100],
        u64::to_le_bytes,
    );

    let mut config = EngineConfig::new(&data);
    config.ram_cache_bytes = 1 << 20;
    config.io_engine = IoEngineKind::Pread;
    let engine = Arc::new(Engine::open(config).expect("open engine"));
    let server = spawn_server(engine, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("start server");
    let args = NgramsArgs {
        addr: server.addr.to_string(),
        data: data.clone(),
        group: "g".into(),
        layer: None,
        tokens: trace,
        seqs: 2,
        seq_len: 100,
        concurrency: 2,
        requests: 0,
        runs: 2,
        warmup_passes: 1,
        verify: 100,
        attribute: 5,
        segment: 3,
        server_pid: Some(std::process::id()),
        ranks: 1,
        rank: 0,
        iops_file: None,
        iops_queue_depth: 8,
        iops_seconds: 0.2,
    };
    let report = run(&args).await.expect("benchmark");
    // 7 + 3 + 11 sequences of 100 tokens = 10 whole requests of 2; 8 rows per position.
    assert_eq!(report.requests, 10);
    assert_eq!(report.rows_per_request, 2 * 100 * 8);
    assert_eq!(report.runs.len(), 2);
    assert!(report.ratio() > 0.0 && report.ngrams_rows_per_s() > 0.0);
    // The server runs in this process: its CPU time was measured. /proc counts in 10 ms ticks,
    // so a path's share of one small run may read 0; over every run and path it cannot.
    assert!(report.runs.iter().all(|r| {
        r.lookup.server_cpu_ns_per_row >= 0.0 && r.ngrams.server_cpu_ns_per_row >= 0.0
    }));
    assert!(
        report
            .runs
            .iter()
            .any(|r| { r.lookup.server_cpu_ns_per_row + r.ngrams.server_cpu_ns_per_row > 0.0 })
    );
    let a = report.attribution;
    assert_eq!(a.requests, 5);
    assert!(a.hash_us > 0.0 && a.distinct_in_request > 0.0 && a.distinct_in_request <= 1.0);
    for p in report.runs.iter().flat_map(|r| [r.ngrams, r.lookup]) {
        // bf16 x 8: 16 bytes a row.
        let mb = p.rows_per_s * 16.0 / 1e6;
        assert!((p.mb_per_s - mb).abs() <= mb * 1e-9, "{p:?}");
        // The table fits the RAM tier, which holds it whole after the warm-up pass.
        assert_eq!((p.ram_hit_rate, p.disk_reads_per_s), (1.0, 0.0), "{p:?}");
    }

    // Rank 1 of 2: its 4 columns of the 8, checked byte for byte like the rest; the raw IOPS of
    // the table's data file measured in the same run where io_uring works here.
    let uring = engram_store_cache::io::UringEngine::start(Default::default()).is_ok();
    let data_file = std::fs::read_dir(data.join("g.layer4"))
        .expect("table dir")
        .filter_map(|e| e.ok().map(|e| e.path().join("data-00000.bin")))
        .find(|p| p.exists())
        .expect("the table's data file");
    let rank = NgramsArgs {
        ranks: 2,
        rank: 1,
        runs: 1,
        warmup_passes: 0,
        iops_file: uring.then_some(data_file),
        ..args.clone()
    };
    let report = run(&rank).await.expect("benchmark of one rank");
    assert_eq!(report.rows_per_request, 2 * 100 * 4);
    assert!(report.ngrams_rows_per_s() > 0.0);
    let bad = NgramsArgs {
        ranks: 2,
        rank: 2,
        ..args.clone()
    };
    let e = run(&bad).await.expect_err("no rank 2 of 2");
    assert!(format!("{e:#}").contains("rank 2 of 2"), "{e:#}");

    // A missing trace or group is an error that names it.
    let missing = NgramsArgs {
        group: "nope".into(),
        ..args
    };
    let e = run(&missing).await.expect_err("unknown group");
    assert!(format!("{e:#}").contains("nope"), "{e:#}");
    server.shutdown().await.expect("shutdown");
}
