//! The VRAM tier behind the gRPC service: a clear startup error where no GPU can be had, and,
//! on a GPU machine with `--features cuda`, rows served from VRAM after a refresh, bit-exact.

mod common;

use common::random_table;
use engram_store::engine::{Engine, EngineConfig};
use engram_store::table::DType;

fn gpu_config(data: &std::path::Path) -> EngineConfig {
    let mut c = EngineConfig::new(data);
    c.ram_cache_bytes = 1 << 20;
    c.gpu_budget_bytes = 256 << 20;
    c.gpu_refresh = std::time::Duration::from_millis(100);
    c.max_batch_ids = 1 << 16;
    c
}

#[cfg(feature = "cuda")]
fn gpu_present() -> bool {
    engram_store_cache::gpu::probe(0).is_ok()
}

#[cfg(not(feature = "cuda"))]
fn gpu_present() -> bool {
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_budget_without_a_gpu_is_a_clear_startup_error() {
    if gpu_present() {
        println!("SKIP: this machine has a usable GPU");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    random_table(dir.path(), "t", DType::Bf16, 80, 100, 4096, 1);
    let e = Engine::open(gpu_config(dir.path())).expect_err("no GPU here");
    let msg = e.to_string();
    assert!(msg.contains("--gpu-budget was given but"), "{msg}");
    println!("startup error as expected: {msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_rows_are_served_from_vram_bit_exact() {
    if !gpu_present() {
        println!("SKIP: no usable GPU (or a build without --features cuda)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let model = random_table(dir.path(), "t", DType::Bf16, 80, 200_000, 4096, 2);
    let (_engine, server, client) = common::start_with(gpu_config(dir.path())).await;
    let hot: Vec<u64> = (0..5_000u64).map(|i| i * 37 % 200_000).collect();
    let mut gpu_hits = 0;
    for round in 0..40 {
        let rows = client.lookup("t", &hot).await.expect("lookup");
        for (i, &id) in hot.iter().enumerate() {
            assert_eq!(rows.row(i), model.row(id), "row {id} in round {round}");
        }
        let stats = client.stats(false).await.expect("stats");
        gpu_hits = stats
            .tiers
            .iter()
            .find(|t| t.tier == "gpu")
            .map_or(0, |t| t.hits);
        if gpu_hits > 0 && round > 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gpu_hits > 0, "no row was served from VRAM");
    println!("gpu hits {gpu_hits}");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetched_rows_move_into_vram_without_lookups() {
    if !gpu_present() {
        println!("SKIP: no usable GPU (or a build without --features cuda)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let model = random_table(dir.path(), "t", DType::Bf16, 80, 200_000, 4096, 3);
    let (_engine, server, client) = common::start_with(gpu_config(dir.path())).await;
    let hot: Vec<u64> = (0..3_000u64).map(|i| i * 61 % 200_000).collect();
    client.prefetch("t", &hot).await.expect("prefetch");
    // Only the prefetch hint counts these rows: no lookup has touched them.
    let gpu_tier = |s: &engram_store_proto::v1::StatsResponse| {
        s.tiers.iter().find(|t| t.tier == "gpu").cloned()
    };
    let mut resident = 0;
    for _ in 0..50 {
        let stats = client.stats(false).await.expect("stats");
        resident = gpu_tier(&stats).map_or(0, |t| t.resident_rows);
        if resident >= hot.len() as u64 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        resident,
        hot.len() as u64,
        "prefetched rows did not enter VRAM"
    );
    client.stats(true).await.expect("reset stats");
    let rows = client.lookup("t", &hot).await.expect("lookup");
    for (i, &id) in hot.iter().enumerate() {
        assert_eq!(rows.row(i), model.row(id), "row {id}");
    }
    let stats = client.stats(false).await.expect("stats");
    let hits = gpu_tier(&stats).map_or(0, |t| t.hits);
    assert_eq!(
        hits,
        hot.len() as u64,
        "prefetched rows were not served from VRAM"
    );
    println!("{resident} prefetched rows resident, {hits} VRAM hits");
    server.shutdown().await.expect("shutdown");
}
