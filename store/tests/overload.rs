//! Overload: with a bound on rows in flight, bursts of concurrent requests from several
//! connections are admitted up to the bound and answered correctly, and the rest are refused at
//! once with RESOURCE_EXHAUSTED naming the bound (no queue: a refusal comes back faster than
//! an admitted request), and the bound's rows are all given back afterwards.

mod common;

use std::time::{Duration, Instant};

use engram_store::engine::EngineConfig;
use engram_store::table::DType;
use engram_store_cache::io::IoEngineKind;
use engram_store_client::Client;
use rand::{Rng, SeedableRng};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_rows_in_flight_requests_are_refused_at_once_and_admitted_ones_succeed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = common::random_table(dir.path(), "t", DType::U8, 256, 50_000, 4096, 3);
    let mut c = EngineConfig::new(dir.path());
    // No RAM tier: every row comes from disk, so requests overlap.
    c.ram_cache_bytes = 0;
    c.io_engine = IoEngineKind::Auto;
    c.queue_depth = 16;
    c.max_batch_ids = 10_000;
    c.max_rows_in_flight = 10_000;
    let (engine, server, client) = common::start_with(c).await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(
            Client::builder(format!("http://{}", server.addr))
                .retries(0)
                .max_batch_ids(10_000)
                .connect()
                .await
                .expect("connect"),
        );
    }

    let (mut admitted, mut refused) = (Vec::new(), Vec::new());
    for burst in 0..20u64 {
        let mut tasks = Vec::new();
        for k in 0..16u64 {
            let client = clients[k as usize % clients.len()].clone();
            let mut rng = rand::rngs::StdRng::seed_from_u64(burst * 100 + k);
            let ids: Vec<u64> = (0..5000).map(|_| rng.random_range(0..50_000)).collect();
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let result = client.lookup("t", &ids).await;
                (ids, result, t.elapsed())
            }));
        }
        let (mut ok_here, mut refused_here) = (0, 0);
        for task in tasks {
            let (ids, result, took) = task.await.expect("request task");
            match result {
                Ok(rows) => {
                    for (i, &id) in ids.iter().enumerate() {
                        assert_eq!(rows.row(i), model.row(id), "row {id}");
                    }
                    admitted.push(took);
                    ok_here += 1;
                }
                Err(e) => {
                    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
                    assert!(
                        e.to_string().contains("rows in flight (10000)"),
                        "the refusal names the bound: {e}"
                    );
                    refused.push(took);
                    refused_here += 1;
                }
            }
        }
        if ok_here > 0 && refused_here > 0 {
            break;
        }
    }
    assert!(
        !admitted.is_empty() && !refused.is_empty(),
        "{} admitted, {} refused: the bursts never overlapped",
        admitted.len(),
        refused.len()
    );
    admitted.sort();
    refused.sort();
    let median = |v: &[Duration]| v[v.len() / 2];
    assert!(
        median(&refused) < median(&admitted),
        "refused at once: median refusal {:?}, median admitted {:?}",
        median(&refused),
        median(&admitted)
    );
    // Never the answer budget's wait (100 ms) or a queue: a refusal is a round trip.
    assert!(
        *refused.last().expect("refused") < Duration::from_millis(500),
        "slowest refusal {:?}",
        refused.last()
    );
    let stats = client.stats(false).await.expect("stats");
    assert_eq!(stats.max_rows_in_flight, 10_000);
    assert!(stats.refused_requests >= refused.len() as u64);
    assert_eq!(stats.rows_in_flight, 0, "every admitted row given back");
    assert_eq!(engine.stats(false).rows_in_flight, 0);
    // With the load gone, a request the size of the bound is admitted.
    let ids: Vec<u64> = (0..10_000).collect();
    let rows = client.lookup("t", &ids).await.expect("alone, admitted");
    assert_eq!(rows.row(9_999), model.row(9_999));
    server.shutdown().await.expect("shutdown");
}
