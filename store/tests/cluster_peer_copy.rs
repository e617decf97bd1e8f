//! Shards copied from a peer, with a real etcd on loopback: one node holds a table, two start
//! with empty data directories; `cluster plan` gives every node shards, the empty ones copy
//! theirs (only those rows, block by block, checked against the checksums) from the holder over
//! `ReadTableFile`, report ready, and the cluster client reads every row right; with the holder
//! gone, the copies alone serve the whole table. A partial copy opened outside the cluster
//! refuses rows it does not hold (FAILED_PRECONDITION), never reads a hole as a row; and
//! `ReadTableFile` refuses names the manifest does not list and ranges past the end. Without
//! an etcd binary it prints `SKIP:` and passes. An Engram group's directory comes along with its
//! layer tables' shards: the empty node then answers LookupNgrams as the holder does.

mod cluster_common;
mod common;

use std::time::Duration;

use cluster_common::{
    DIM, ROWS, SEED, check_rows, client_seeing, etcd_or_skip, place, place_table, start_node,
    synth_f32_table_with, wait_ready,
};
use engram_store::engine::{Engine, EngineConfig, LookupError};
use engram_store::ingest::WriteOptions;
use engram_store::table::{HELD_ROWS_FILE, HeldRows, OpenTable};
use engram_store_client::{Client, proto as pb};
use rand::{Rng, SeedableRng};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn empty_nodes_copy_their_shards_from_a_peer_and_serve_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some((etcd, endpoints)) = etcd_or_skip(dir.path()) else {
        return;
    };
    // 20,000 rows of 64 B in data files of 256 KiB: five files, so shards span files.
    let whole = dir.path().join("holder");
    let options = WriteOptions {
        max_file_bytes: 256 << 10,
        ..WriteOptions::default()
    };
    synth_f32_table_with(&whole, "t", ROWS, DIM, SEED, &options);
    let empty: Vec<_> = (1..3)
        .map(|i| dir.path().join(format!("empty{i}")))
        .collect();
    let mut nodes = vec![start_node(&whole, &etcd.client_url, "n0", false).await];
    for (i, d) in empty.iter().enumerate() {
        std::fs::create_dir_all(d).expect("mkdir");
        nodes.push(start_node(d, &etcd.client_url, &format!("n{}", i + 1), false).await);
    }
    let client = client_seeing(&endpoints, 3).await;
    let outcome = place(&endpoints, 6, 2, Duration::from_secs(20)).await;
    let tm = outcome.tables[0].clone();
    for id in ["n1", "n2"] {
        assert!(
            tm.shards.iter().any(|s| s.replicas.iter().any(|r| r == id)),
            "{id} was given no shard: {tm:?}"
        );
    }
    wait_ready(&client, "t", 2).await;

    // Each empty node holds exactly its shards' rows (a partial copy unless it got them all).
    for (i, d) in empty.iter().enumerate() {
        let id = format!("n{}", i + 1);
        let version_dir = d.join("t").join("v00000001");
        let mine = HeldRows::new(
            tm.shards
                .iter()
                .filter(|s| s.replicas.contains(&id))
                .map(|s| s.start..s.end),
        );
        let held = HeldRows::load(&version_dir, ROWS)
            .expect("held rows")
            .expect("a partial copy");
        assert!(
            mine.ranges().all(|r| held.covers(&r)),
            "{id} holds {} but was given {}",
            held.describe(),
            mine.describe()
        );
        assert!(
            held.rows() < ROWS || mine.rows() == ROWS,
            "{id} copied more than its shards"
        );
    }

    // Every row right through the cluster client.
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for _ in 0..20 {
        let ids: Vec<u64> = (0..500).map(|_| rng.random_range(0..ROWS)).collect();
        check_rows(&ids, &client.lookup("t", &ids).await.expect("lookup"));
    }

    // ReadTableFile: names outside the manifest and ranges past the end are refused.
    let peer = Client::connect(format!("http://{}", nodes[0].addr))
        .await
        .expect("connect");
    let read = |file: &str, offset: u64| pb::ReadTableFileRequest {
        table: "t".into(),
        version: 1,
        file: file.into(),
        offset,
        ..Default::default()
    };
    for bad in [
        "../../etc/passwd",
        "/etc/passwd",
        "data-00000.bin/..",
        "",
        "held_rows.json",
    ] {
        let err = peer.read_file(read(bad, 0)).await.expect_err(bad);
        assert_eq!(err.code(), tonic::Code::NotFound, "{bad}: {err}");
    }
    let err = peer
        .read_file(pb::ReadTableFileRequest {
            version: 7,
            ..read("manifest.json", 0)
        })
        .await
        .expect_err("a version not served");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    let (manifest, len) = peer
        .read_file(read("manifest.json", 0))
        .await
        .expect("manifest");
    assert_eq!(manifest.len() as u64, len);
    let err = peer
        .read_file(read("manifest.json", len + 1))
        .await
        .expect_err("past the end");
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err}");

    // The holder goes: the two copies serve every row between them (two replicas on distinct
    // nodes out of three: every shard has one on an empty node).
    let gone = nodes.remove(0);
    if let Some(s) = gone.server {
        s.shutdown().await.expect("shutdown");
    }
    drop(gone.node);
    client
        .watcher()
        .wait_for(Duration::from_secs(10), |v| v.nodes.len() == 2)
        .await;
    let ids: Vec<u64> = (0..ROWS).step_by(7).collect();
    check_rows(
        &ids,
        &client.lookup("t", &ids).await.expect("from the copies"),
    );
    for n in nodes {
        if let Some(s) = n.server {
            s.shutdown().await.expect("shutdown");
        }
    }

    // Outside the cluster, a partial copy serves its rows and refuses the others.
    let copy = &empty[0];
    let held = HeldRows::load(&copy.join("t").join("v00000001"), ROWS)
        .expect("held")
        .expect("partial");
    let engine = Engine::open(EngineConfig::new(copy)).expect("engine on the copy");
    let table = engine.table("t").expect("table");
    let inside: Vec<u64> = held.ranges().flat_map(|r| [r.start, r.end - 1]).collect();
    let rows = table.lookup(&inside).await.expect("held rows");
    for (i, &id) in inside.iter().enumerate() {
        let want =
            engram_store::table::synth_row(SEED, engram_store::table::DType::F32, DIM as usize, id);
        assert_eq!(
            &rows[i * want.len()..(i + 1) * want.len()],
            &want[..],
            "row {id}"
        );
    }
    if let Some(outside) = (0..ROWS).find(|&id| !held.contains(id)) {
        let err = table.lookup(&[outside]).await.expect_err("a row not held");
        assert!(
            matches!(err, LookupError::RowNotHeld { id, .. } if id == outside),
            "{err}"
        );
        assert!(err.to_string().contains(&held.describe()), "{err}");
    }
    // The copy's directory opens as a table whose held rows are what the file says.
    let open = OpenTable::open_dir(&copy.join("t").join("v00000001"), false).expect("open");
    assert_eq!(open.held.as_ref(), Some(&held));
    assert!(
        copy.join("t")
            .join("v00000001")
            .join(HELD_ROWS_FILE)
            .exists()
    );
    drop(etcd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_engram_group_comes_along_with_its_layer_shards() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some((etcd, endpoints)) = etcd_or_skip(dir.path()) else {
        return;
    };
    let whole = dir.path().join("holder");
    let (layout, map) = common::write_small_group_inputs(dir.path(), 1500, 500);
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_engram-store"))
        .args([
            "engram", "create", "--name", "g", "--synth", "--dtype", "bf16", "--seed", "5",
        ])
        .arg("--layout")
        .arg(&layout)
        .arg("--compress")
        .arg(&map)
        .arg("--data")
        .arg(&whole)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run engram-store");
    assert!(status.success(), "engram create: {status}");
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let holder = start_node(&whole, &etcd.client_url, "n0", false).await;
    let joiner = start_node(&empty, &etcd.client_url, "n1", false).await;
    let client = client_seeing(&endpoints, 2).await;
    let outcome = place_table(&endpoints, "g", 2, 2, Duration::from_secs(20)).await;
    for tm in &outcome.tables {
        wait_ready(&client, &tm.table, 2).await;
    }
    assert!(
        empty.join("g.engram").join("layout.json").exists(),
        "the group's directory was not copied"
    );
    let group = joiner
        .node
        .engine()
        .group("g")
        .expect("the copy serves the group");
    let sequences = [
        engram_store_client::token_sequence(&[3, 14, 15, 92, 65, 35], &[]),
        engram_store_client::token_sequence(&[89, 79, 32], &[38, 46]),
    ];
    let at = |addr: &str| Client::connect(format!("http://{addr}"));
    let (from_holder, from_copy) = (
        at(&holder.addr).await.expect("connect"),
        at(&joiner.addr).await.expect("connect"),
    );
    for layer in group.layers().map(|l| l.layer_id()).collect::<Vec<_>>() {
        let want = from_holder
            .lookup_ngrams("g", layer, &sequences)
            .await
            .expect("holder");
        let got = from_copy
            .lookup_ngrams("g", layer, &sequences)
            .await
            .expect("copy");
        assert_eq!(got.len(), want.len(), "layer {layer}");
        for i in 0..want.len() {
            assert_eq!(got.row(i), want.row(i), "layer {layer}, row {i}");
        }
    }
    for n in [holder, joiner] {
        if let Some(s) = n.server {
            s.shutdown().await.expect("shutdown");
        }
    }
}

/// Allocated bytes of the data files of `t` version 1 in `data` (holes not counted).
fn allocated(data: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::read_dir(data.join("t").join("v00000001"))
        .expect("version dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".bin"))
        .map(|e| e.metadata().expect("metadata").blocks() * 512)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rows_of_shards_moved_away_are_released_and_their_blocks_punched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some((etcd, endpoints)) = etcd_or_skip(dir.path()) else {
        return;
    };
    let whole = dir.path().join("holder");
    synth_f32_table_with(&whole, "t", ROWS, DIM, SEED, &WriteOptions::default());
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let holder = start_node(&whole, &etcd.client_url, "n0", false).await;
    let joiner = start_node(&empty, &etcd.client_url, "n1", false).await;
    let client = client_seeing(&endpoints, 2).await;
    place(&endpoints, 8, 2, Duration::from_secs(20)).await;
    wait_ready(&client, "t", 2).await;
    let version_dir = empty.join("t").join("v00000001");
    let before = allocated(&empty);
    assert_eq!(
        HeldRows::load(&version_dir, ROWS)
            .expect("held")
            .map(|h| h.rows()),
        Some(ROWS),
        "n1 copied every shard"
    );

    // One replica each: n1 keeps only the shards placed on it now.
    let outcome = place(&endpoints, 8, 1, Duration::from_secs(20)).await;
    assert!(
        outcome.settled_epoch.is_some(),
        "the leaving replicas were not dropped"
    );
    let tm = &outcome.tables[0];
    let mine = HeldRows::new(
        tm.shards
            .iter()
            .filter(|s| s.replicas.contains(&"n1".to_string()))
            .map(|s| s.start..s.end),
    );
    assert!(mine.rows() < ROWS, "n1 kept every shard: {tm:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let released = loop {
        let held = HeldRows::load(&version_dir, ROWS)
            .expect("held")
            .expect("partial");
        let punched = allocated(&empty) < before;
        if (held == mine && punched) || std::time::Instant::now() > deadline {
            break (held, punched);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        released.0,
        mine,
        "n1 holds {} but was left {}",
        released.0.describe(),
        mine.describe()
    );
    assert!(
        released.1,
        "no block was punched ({before} bytes allocated before)"
    );
    // Every row still right; n1 refuses a row it gave back.
    let ids: Vec<u64> = (0..ROWS).step_by(13).collect();
    check_rows(
        &ids,
        &client.lookup("t", &ids).await.expect("after the release"),
    );
    if let Some(gone) = (0..ROWS).find(|&id| !mine.contains(id)) {
        let table = joiner.node.engine().table("t").expect("table");
        let err = table.lookup(&[gone]).await.expect_err("a released row");
        assert!(matches!(err, LookupError::RowNotHeld { .. }), "{err}");
    }
    for n in [holder, joiner] {
        if let Some(s) = n.server {
            s.shutdown().await.expect("shutdown");
        }
    }
}
