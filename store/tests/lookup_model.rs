//! Lookups over real gRPC against in-memory models: every dtype, several row sizes and block
//! sizes, both I/O engines, with and without the RAM tier, duplicates and batches above the
//! server limit (split by the client), streaming, and many concurrent clients.

mod common;

use common::{Model, random_table, start, uring_available};
use engram_store::table::DType;
use engram_store_cache::io::IoEngineKind;
use rand::{Rng, SeedableRng};

fn random_ids(rng: &mut impl Rng, rows: u64, n: usize) -> Vec<u64> {
    (0..n).map(|_| rng.random_range(0..rows)).collect()
}

fn check(model: &Model, ids: &[u64], rows: &engram_store_client::Rows) {
    assert_eq!(rows.len(), ids.len());
    for (i, &id) in ids.iter().enumerate() {
        assert_eq!(rows.row(i), model.row(id), "row {id} at position {i}");
    }
}

async fn every_dtype_matches_model(io: IoEngineKind, ram: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let shapes = [
        (DType::F32, 7, 5000, 4096),  // 28-byte rows
        (DType::F16, 80, 3000, 4096), // 160-byte rows
        (DType::Bf16, 80, 9999, 4096),
        (DType::I8, 33, 2000, 512),       // odd row size, small blocks
        (DType::U8, 5000, 300, 4096),     // rows larger than a block
        (DType::F8E4M3, 4096, 100, 4096), // exactly a block
    ];
    let mut models = Vec::new();
    for (i, (dtype, dim, rows, block)) in shapes.iter().enumerate() {
        let name = format!("t{i}_{dtype}");
        models.push((
            name.clone(),
            random_table(dir.path(), &name, *dtype, *dim, *rows, *block, i as u64),
        ));
    }
    let (_engine, server, client) = start(dir.path(), ram, io).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for (name, model) in &models {
        let info = client.describe_table(name).await.expect("describe");
        assert_eq!(info.rows, model.rows);
        assert_eq!(info.row_bytes as usize, model.row_bytes);
        for n in [1usize, 2, 100, 3000] {
            let mut ids = random_ids(&mut rng, model.rows, n);
            if n > 2 {
                ids[1] = ids[0]; // duplicates are repeated
                ids[n - 1] = model.rows - 1; // last row
            }
            // Twice: the second pass is served (partly) from the RAM tier.
            for _ in 0..2 {
                let rows = client.lookup(name, &ids).await.expect("lookup");
                check(model, &ids, &rows);
            }
        }
        let empty = client.lookup(name, &[]).await.expect("empty lookup");
        assert!(empty.is_empty());
    }
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pread_engine_without_ram_tier() {
    every_dtype_matches_model(IoEngineKind::Pread, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pread_engine_with_ram_tier() {
    every_dtype_matches_model(IoEngineKind::Pread, 1 << 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_uring_engine_with_and_without_ram_tier() {
    if !uring_available() {
        println!("SKIP: io_uring is unavailable on this machine");
        return;
    }
    every_dtype_matches_model(IoEngineKind::IoUring, 0).await;
    every_dtype_matches_model(IoEngineKind::IoUring, 1 << 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_splits_batches_above_the_server_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = random_table(dir.path(), "big", DType::Bf16, 16, 50_000, 4096, 3);
    let (_engine, server, client) = start(dir.path(), 1 << 20, IoEngineKind::Auto).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let ids = random_ids(&mut rng, model.rows, 25_001); // server limit is 10,000
    let rows = client.lookup("big", &ids).await.expect("split lookup");
    check(&model, &ids, &rows);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_answers_in_order_and_survives_a_bad_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = random_table(dir.path(), "s", DType::F16, 24, 8_000, 4096, 4);
    let (_engine, server, client) = start(dir.path(), 0, IoEngineKind::Auto).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let mut batches: Vec<Vec<u64>> = (0..40)
        .map(|i| random_ids(&mut rng, model.rows, 1 + i * 37))
        .collect();
    batches[7] = vec![1, model.rows + 5]; // out of range
    let stream = client
        .lookup_stream("s", futures::stream::iter(batches.clone()))
        .await
        .expect("open stream");
    use futures::StreamExt;
    let answers: Vec<_> = stream.collect().await;
    assert_eq!(answers.len(), batches.len());
    for (i, (ids, answer)) in batches.iter().zip(answers).enumerate() {
        if i == 7 {
            let e = answer.expect_err("batch 7 is out of range");
            assert_eq!(e.code(), tonic::Code::OutOfRange);
            continue;
        }
        check(&model, ids, &answer.expect("batch ok"));
    }
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_clients_get_their_own_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = std::sync::Arc::new(random_table(
        dir.path(),
        "c",
        DType::Bf16,
        80,
        20_000,
        4096,
        5,
    ));
    let (_engine, server, client) = start(dir.path(), 512 << 10, IoEngineKind::Auto).await;
    let addr = format!("http://{}", server.addr);
    let mut tasks = Vec::new();
    for t in 0..16u64 {
        let model = model.clone();
        // Half share the first connection, half open their own.
        let client = if t % 2 == 0 {
            client.clone()
        } else {
            engram_store_client::Client::connect(addr.clone())
                .await
                .expect("connect")
        };
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(100 + t);
            for _ in 0..20 {
                // Hot rows shared by every client, so misses of one row collide in flight.
                let ids: Vec<u64> = (0..256).map(|_| rng.random_range(0..600)).collect();
                let rows = client.lookup("c", &ids).await.expect("lookup");
                check(&model, &ids, &rows);
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    let stats = client.stats(false).await.expect("stats");
    assert_eq!(stats.errors, 0);
    assert_eq!(stats.requests, 16 * 20);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_fits_is_held_whole_unless_a_policy_is_asked_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = random_table(dir.path(), "small", DType::Bf16, 80, 2000, 4096, 3);
    let ids: Vec<u64> = (0..2000u64).rev().chain(0..2000).collect();
    for (policy, expected) in [(None, "direct"), (Some("s3sketch"), "s3sketch")] {
        let mut c = engram_store::engine::EngineConfig::new(dir.path());
        c.ram_cache_bytes = 1 << 20;
        c.io_engine = IoEngineKind::Pread;
        c.max_batch_ids = 10_000;
        c.ram_policy = policy.map(String::from);
        let (_engine, server, client) = common::start_with(c).await;
        for _ in 0..2 {
            let rows = client.lookup("small", &ids).await.expect("lookup");
            check(&model, &ids, &rows);
        }
        let stats = client.stats(false).await.expect("stats");
        let ram = stats
            .tiers
            .iter()
            .find(|t| t.tier == "ram")
            .expect("ram tier stats");
        assert_eq!(ram.policy, expected);
        if expected == "direct" {
            // The first batch (every row twice) misses throughout, the second hits throughout.
            assert_eq!((ram.misses, ram.hits), (4000, 4000), "{ram:?}");
            assert_eq!(ram.resident_rows, 2000);
        }
        server.shutdown().await.expect("shutdown");
    }
}
