//! A cluster on loopback, with a real etcd: three in-process nodes register, `cluster plan`
//! places a table (4 shards x 2 replicas) and an Engram group, and the cluster client reads
//! every row right through splits, FAILED_PRECONDITION from a node that does not hold a shard,
//! `--route` for a plain client, a node shut down under load and an etcd restart. Without an
//! etcd binary it prints `SKIP:` and passes. (The kill -9 and cut-link cases, with each node in
//! its own network namespace, are in `cluster_netns.rs`.)

mod cluster_common;
mod common;

use std::time::{Duration, Instant};

use cluster_common::{
    DIM, ROWS, SEED, check_rows, client_seeing, etcd_binary, loopback_etcd, place, start_node,
    wait_ready,
};
use engram_store::cluster::show;
use engram_store_client::cluster::EPOCH_HEADER;
use engram_store_client::{Client, proto as pb};
use rand::{Rng, SeedableRng};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_loopback_cluster_routes_fails_over_and_outlives_etcd() {
    if let Err(why) = etcd_binary() {
        println!("SKIP: {why}");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut etcd = loopback_etcd(dir.path());
    let endpoints = vec![etcd.client_url.clone()];
    let data = dir.path().join("data");
    cluster_common::synth_f32_table(&data, "t", ROWS, DIM, SEED);

    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(start_node(&data, &etcd.client_url, &format!("n{i}"), i == 0).await);
    }
    // Every node registered before placing.
    let client = client_seeing(&endpoints, 3).await;
    let outcome = place(&endpoints, 4, 2, Duration::from_secs(10)).await;
    assert_eq!(outcome.tables[0].shards.len(), 4);
    wait_ready(&client, "t", 2).await;
    let text = show(&endpoints).await.expect("show");
    assert!(text.contains("table t v1: 20000 rows"), "{text}");

    // Reads: random batches, duplicates, every row right.
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for _ in 0..20 {
        let ids: Vec<u64> = (0..500).map(|_| rng.random_range(0..ROWS)).collect();
        check_rows(&ids, &client.lookup("t", &ids).await.expect("lookup"));
    }
    let err = client.lookup("t", &[ROWS]).await.expect_err("past the end");
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err}");

    // A routed request for a shard the node does not serve: FAILED_PRECONDITION, with its epoch.
    let view = client.view();
    let tm = &view.map.tables["t"];
    let (shard, outsider) = (0..tm.shards.len())
        .find_map(|i| {
            nodes
                .iter()
                .find(|n| !tm.shards[i].replicas.contains(&n.node.options().node_id))
                .map(|n| (i, n))
        })
        .expect("a node outside some shard");
    let mut raw = Client::connect(format!("http://{}", outsider.addr))
        .await
        .expect("connect")
        .raw();
    let mut req = tonic::Request::new(pb::LookupRequest {
        table: "t".into(),
        ids: vec![tm.shards[shard].start],
        ..Default::default()
    });
    req.metadata_mut().insert(
        EPOCH_HEADER,
        view.map.epoch.to_string().parse().expect("epoch"),
    );
    let status = raw.lookup(req).await.expect_err("not held");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert_eq!(
        status
            .metadata()
            .get(EPOCH_HEADER)
            .and_then(|v| v.to_str().ok()),
        Some(view.map.epoch.to_string().as_str())
    );

    // A plain client on the routing node (n0) gets every row, held there or not.
    let plain = Client::connect(format!("http://{}", nodes[0].addr))
        .await
        .expect("plain client");
    let ids: Vec<u64> = (0..ROWS).step_by(37).collect();
    check_rows(&ids, &plain.lookup("t", &ids).await.expect("routed lookup"));

    // A node goes away under load: no lookup fails.
    let load = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(2);
            let started = Instant::now();
            let (mut n, mut slowest) = (0, Duration::ZERO);
            while started.elapsed() < Duration::from_secs(5) {
                let ids: Vec<u64> = (0..256).map(|_| rng.random_range(0..ROWS)).collect();
                let t = Instant::now();
                let rows = client.lookup("t", &ids).await.expect("lookup under load");
                slowest = slowest.max(t.elapsed());
                check_rows(&ids, &rows);
                n += 1;
            }
            (n, slowest)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gone = nodes.remove(2);
    if let Some(s) = gone.server {
        s.shutdown().await.expect("shutdown");
    }
    drop(gone.node);
    let (n, slowest) = load.await.expect("load task");
    assert!(n > 10, "only {n} lookups");
    assert!(slowest < Duration::from_secs(3), "slowest {slowest:?}");

    // etcd restarts: serving goes on from the last map, and the nodes register again.
    etcd.kill();
    for _ in 0..10 {
        let ids: Vec<u64> = (0..300).map(|_| rng.random_range(0..ROWS)).collect();
        check_rows(
            &ids,
            &client.lookup("t", &ids).await.expect("lookup without etcd"),
        );
    }
    etcd.restart();
    let view = client
        .watcher()
        .wait_for(Duration::from_secs(20), |v| {
            v.nodes.len() == 2 && v.nodes.values().all(|n| n.ready)
        })
        .await;
    assert_eq!(view.nodes.len(), 2, "{:?}", view.nodes.keys());
    let ids: Vec<u64> = (0..ROWS).step_by(11).collect();
    check_rows(
        &ids,
        &client.lookup("t", &ids).await.expect("after etcd restart"),
    );
    for n in nodes {
        if let Some(s) = n.server {
            s.shutdown().await.expect("shutdown");
        }
    }
}
