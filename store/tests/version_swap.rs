//! Hot version swap through a real server: new versions written into the data directory while
//! many clients read are picked up by the watcher and swapped in with no failed request and no
//! response mixing versions (every row checked against the synthetic content of the version its
//! response names: each version has its own seed); older versions stay pinnable while kept and
//! their files go once drained; corrupt, half-written and misfitting versions are refused while
//! the old one serves; Engram groups follow their layer tables.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use engram_store::engine::EngineConfig;
use engram_store::group::{GroupSource, create_group};
use engram_store::ingest::{SynthSpec, WriteOptions, synth_table};
use engram_store::server::table_health_name;
use engram_store::table::{DType, synth_row, version_dir_name};
use engram_store_client::{Client, ClientError, proto as pb};
use engram_store_hashing::{CompressionMap, LayerHasher, Layout};
use rand::{Rng, SeedableRng};
use tonic::Code;

const ROWS: u64 = 20_000;
const DIM: u32 = 32;

/// The content seed of version `v` of the test tables.
fn seed_of(v: u64) -> u64 {
    1000 + v
}

/// Small data files, so a version has several.
fn write_options() -> WriteOptions {
    WriteOptions {
        max_file_bytes: 256 << 10,
        ..WriteOptions::default()
    }
}

/// Writes the next version of table `name` (seeded by the version it gets) and returns it.
fn write_version(data: &Path, name: &str, rows: u64, dim: u32) -> u64 {
    let next = engram_store::table::newest_version(&data.join(name)).map_or(1, |v| v + 1);
    let spec = SynthSpec {
        name: name.into(),
        rows,
        row_dim: dim,
        dtype: DType::Bf16,
        seed: seed_of(next),
    };
    let m = synth_table(data, &spec, &write_options(), None).expect("write a version");
    assert_eq!(m.version, next);
    next
}

fn version_dir(data: &Path, name: &str, v: u64) -> PathBuf {
    data.join(name).join(version_dir_name(v))
}

/// Checks every row of `rows` (ids `ids` of a `DIM`-wide bf16 table) against the content of
/// the version the response names; returns the rows that differ.
fn wrong_rows(rows: &engram_store_client::Rows, ids: &[u64]) -> usize {
    let seed = seed_of(rows.version());
    ids.iter()
        .enumerate()
        .filter(|&(i, &id)| rows.row(i) != synth_row(seed, DType::Bf16, DIM as usize, id))
        .count()
}

async fn connect(addr: std::net::SocketAddr) -> Client {
    Client::builder(format!("http://{addr}"))
        .retries(0)
        .connect()
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_swap_under_load_with_no_failed_or_mixed_response() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    assert_eq!(write_version(&data, "t", ROWS, DIM), 1);
    let mut c = EngineConfig::new(&data);
    // A RAM tier that holds part of the table, so warming a new version matters.
    c.ram_cache_bytes = 512 << 10;
    c.ram_policy = Some("lru".into());
    c.version_watch = Duration::from_millis(100);
    c.keep_versions = 2;
    let (engine, server, _client) = common::start_with(c).await;

    let stop = Arc::new(AtomicBool::new(false));
    let newest_seen = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for k in 0..8u64 {
        let client = connect(server.addr).await;
        let (stop, newest_seen) = (stop.clone(), newest_seen.clone());
        clients.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(k);
            let (mut requests, mut failed, mut mixed) = (0u64, Vec::new(), 0u64);
            let mut versions = BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                // Hot rows (the first thousand) and cold ones, in batches of 1 to 300.
                let n = rng.random_range(1..=300);
                let ids: Vec<u64> = (0..n)
                    .map(|_| {
                        if rng.random_bool(0.7) {
                            rng.random_range(0..1000)
                        } else {
                            rng.random_range(0..ROWS)
                        }
                    })
                    .collect();
                requests += 1;
                match client.lookup("t", &ids).await {
                    Ok(rows) => {
                        if wrong_rows(&rows, &ids) > 0 {
                            mixed += 1;
                        }
                        versions.insert(rows.version());
                        newest_seen.fetch_max(rows.version(), Ordering::Relaxed);
                    }
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (requests, failed, mixed, versions)
        }));
    }

    // Three new versions, each written while the clients read and seen by them within 10 s.
    for v in 2..=4u64 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let d = data.clone();
        let written = tokio::task::spawn_blocking(move || write_version(&d, "t", ROWS, DIM))
            .await
            .expect("writer");
        assert_eq!(written, v);
        let t = Instant::now();
        while newest_seen.load(Ordering::Relaxed) < v {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "version {v} was not served within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut requests, mut seen) = (0, BTreeSet::new());
    for task in clients {
        let (n, failed, mixed, versions) = task.await.expect("client");
        assert!(failed.is_empty(), "failed requests: {failed:?}");
        assert_eq!(
            mixed, 0,
            "responses whose rows are not all of the version named"
        );
        requests += n;
        seen.extend(versions);
    }
    assert_eq!(seen, BTreeSet::from([1, 2, 3, 4]));
    assert!(requests > 100, "only {requests} requests");

    // Kept: the version served and the one before it; the older ones' files go once drained.
    let versions: Vec<u64> = engine
        .catalog()
        .versions("t")
        .expect("t")
        .all()
        .map(|t| t.version())
        .collect();
    assert_eq!(versions, vec![4, 3]);
    let t = Instant::now();
    while version_dir(&data, "t", 1).exists() || version_dir(&data, "t", 2).exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "versions 1 and 2 were not removed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(version_dir(&data, "t", 3).exists() && version_dir(&data, "t", 4).exists());

    // Pinning: a kept version serves its own content; a version gone is FAILED_PRECONDITION
    // naming it.
    let client = connect(server.addr).await;
    let ids = [0u64, 7, 19_999, 7];
    for v in [3, 4] {
        let rows = client.lookup_at("t", &ids, Some(v)).await.expect("pinned");
        assert_eq!(rows.version(), v);
        assert_eq!(wrong_rows(&rows, &ids), 0, "version {v}");
    }
    for gone in [1, 2, 99] {
        let err = client
            .lookup_at("t", &ids, Some(gone))
            .await
            .expect_err("not kept");
        assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
        assert!(
            err.to_string()
                .contains(&format!("version {gone} of table \"t\""))
                && err.to_string().contains("[4, 3]"),
            "{err}"
        );
    }
    // Metrics and Stats see the version served.
    let info = client.describe_table("t").await.expect("describe");
    assert_eq!(info.version, 4);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_half_written_versions_are_refused_while_the_old_one_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    write_version(&data, "t", ROWS, DIM);
    let mut c = EngineConfig::new(&data);
    c.ram_cache_bytes = 1 << 20;
    // Reloads are asked for here, so each step is seen exactly.
    c.version_watch = Duration::ZERO;
    let (engine, server, client) = common::start_with(c).await;
    let ids: Vec<u64> = (0..ROWS).step_by(97).collect();
    let serves_v1 = || async {
        let rows = client
            .lookup("t", &ids)
            .await
            .expect("the old version serves");
        assert_eq!((rows.version(), wrong_rows(&rows, &ids)), (1, 0));
    };
    serves_v1().await;
    let reload = |tables: &'static [&'static str]| {
        let client = client.clone();
        async move { client.reload(tables).await.expect("reload") }
    };

    // Version 2: a data block flipped after it was written (its checksum no longer matches).
    assert_eq!(write_version(&data, "t", ROWS, DIM), 2);
    let file = version_dir(&data, "t", 2).join("data-00001.bin");
    let mut bytes = std::fs::read(&file).expect("read data file");
    bytes[3 * 4096 + 100] ^= 0xFF;
    std::fs::write(&file, &bytes).expect("corrupt a block");
    let report = reload(&[]).await;
    let t = report.iter().find(|r| r.table == "t").expect("t reported");
    assert_eq!(t.outcome, pb::ReloadOutcome::Refused as i32, "{t:?}");
    assert_eq!((t.previous_version, t.version), (1, 1));
    assert!(
        t.message.contains("version 2 refused") && t.message.contains("checksum"),
        "{}",
        t.message
    );
    serves_v1().await;

    // Version 3: half-written (a data file cut short, as a copy still arriving would be).
    assert_eq!(write_version(&data, "t", ROWS, DIM), 3);
    let file = version_dir(&data, "t", 3).join("data-00002.bin");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .expect("open data file");
    f.set_len(4096 * 3).expect("truncate");
    let report = reload(&["t"]).await;
    assert_eq!(report.len(), 1);
    assert_eq!(report[0].outcome, pb::ReloadOutcome::Refused as i32);
    assert!(
        report[0].message.contains("version 3 refused")
            && report[0].message.contains("file length"),
        "{}",
        report[0].message
    );
    serves_v1().await;

    // The watcher does not try refused versions again while their files stay as they are...
    let report = engine.reload(&[], false).await.expect("watcher's reload");
    let t = report.iter().find(|r| r.table == "t").expect("t");
    assert!(t.message.contains("was refused"), "{}", t.message);
    // ...and health stays SERVING for the table: the old version serves.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: table_health_name("t"),
        })
        .await
        .expect("check")
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // A version that names another table in its manifest is refused too.
    let manifest =
        std::fs::read_to_string(version_dir(&data, "t", 1).join("manifest.json")).expect("read");
    let dir_v4 = version_dir(&data, "t", 4);
    std::fs::create_dir_all(&dir_v4).expect("mkdir");
    std::fs::write(dir_v4.join("manifest.json"), &manifest).expect("manifest of version 1");
    let report = reload(&["t"]).await;
    assert!(
        report[0].message.contains("version 4 refused"),
        "{}",
        report[0].message
    );
    std::fs::remove_dir_all(&dir_v4).expect("clean");

    // A good version 5 is served, skipping the refused ones.
    let d = data.clone();
    let v = tokio::task::spawn_blocking(move || {
        // The writer numbers after the newest complete version: 4 is gone, so this is 4...
        let v = write_version(&d, "t", ROWS, DIM);
        assert_eq!(v, 4);
        // ...and the next is 5.
        write_version(&d, "t", ROWS, DIM)
    })
    .await
    .expect("writer");
    assert_eq!(v, 5);
    let report = reload(&["t"]).await;
    assert_eq!(report[0].outcome, pb::ReloadOutcome::Swapped as i32);
    assert_eq!((report[0].previous_version, report[0].version), (1, 5));
    let rows = client.lookup("t", &ids).await.expect("version 5");
    assert_eq!((rows.version(), wrong_rows(&rows, &ids)), (5, 0));
    // Version 1 is kept for pinning (keep 2: 5 and the one served before it).
    let rows = client
        .lookup_at("t", &ids, Some(1))
        .await
        .expect("pinned 1");
    assert_eq!((rows.version(), wrong_rows(&rows, &ids)), (1, 0));
    let err = client
        .lookup_at("t", &ids, Some(4))
        .await
        .expect_err("4 was never served");
    assert_eq!(err.code(), Code::FailedPrecondition);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_is_an_admin_rpc_and_adds_new_tables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    write_version(&data, "t", 100, DIM);
    let mut c = EngineConfig::new(&data);
    c.version_watch = Duration::ZERO;
    c.ram_cache_bytes = 1 << 20;
    let engine = Arc::new(engram_store::engine::Engine::open(c).expect("engine"));
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "read:r3ad\nadmin:adm1n\n").expect("tokens");
    let options = engram_store::server::ServerOptions {
        edge: engram_store::edge::EdgeOptions {
            tokens: Some(Arc::new(
                engram_store::access::TokenSet::load(&tokens).expect("load tokens"),
            )),
            ..Default::default()
        },
        ..Default::default()
    };
    let server = engram_store::server::spawn_server_with(
        engine.clone(),
        engram_store::server::ListenAddr::Tcp("127.0.0.1:0".parse().expect("addr")),
        options,
    )
    .await
    .expect("server");
    let as_role = |token: &str| {
        Client::builder(format!("http://{}", server.addr))
            .token(token)
            .retries(0)
            .connect()
    };
    let reader = as_role("r3ad").await.expect("connect");
    let admin = as_role("adm1n").await.expect("connect");
    let err = reader.reload(&[]).await.expect_err("read token");
    assert!(matches!(err, ClientError::PermissionDenied(_)), "{err}");
    // A table new to the directory is served after a Reload, with the RAM the others left; the
    // version before its newest is kept for pinning, as at start.
    write_version(&data, "new", 50, DIM);
    write_version(&data, "new", 50, DIM);
    let report = admin.reload(&[]).await.expect("reload");
    let new = report.iter().find(|r| r.table == "new").expect("new");
    assert_eq!(new.outcome, pb::ReloadOutcome::Added as i32, "{new:?}");
    assert_eq!((new.previous_version, new.version), (0, 2));
    let rows = reader
        .lookup_at("new", &[3, 49], Some(1))
        .await
        .expect("pinned 1");
    assert_eq!((rows.version(), wrong_rows(&rows, &[3, 49])), (1, 0));
    assert!(version_dir(&data, "new", 1).exists());
    assert_eq!(
        report.iter().find(|r| r.table == "t").map(|r| r.outcome),
        Some(pb::ReloadOutcome::Unchanged as i32)
    );
    let rows = reader.lookup("new", &[49, 0]).await.expect("new table");
    assert_eq!(wrong_rows(&rows, &[49, 0]), 0);
    let report = admin.reload(&["missing"]).await.expect("reload");
    assert_eq!(report[0].outcome, pb::ReloadOutcome::Refused as i32);
    assert!(
        report[0].message.contains("no complete version"),
        "{report:?}"
    );
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engram_groups_follow_their_layer_tables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (layout_path, map_path) = (dir.path().join("layout.json"), dir.path().join("map.npy"));
    std::fs::write(&layout_path, common::SMALL_LAYOUT).expect("layout");
    let raw: Vec<i64> = (0..1500).map(|r| r * 7919 % 500).collect();
    std::fs::write(&map_path, common::npy_i64(&raw)).expect("map");
    create_group(
        &data,
        "g",
        &layout_path,
        &map_path,
        &GroupSource::Synth {
            dtype: DType::Bf16,
            seed: seed_of(1),
        },
        &WriteOptions::default(),
        None,
    )
    .expect("create group");
    let mut c = EngineConfig::new(&data);
    c.version_watch = Duration::ZERO;
    c.ram_cache_bytes = 1 << 20;
    let (engine, server, client) = common::start_with(c).await;

    let layout = Layout::from_json_str(common::SMALL_LAYOUT).expect("layout");
    let map = CompressionMap::from_ids((0..1500u32).map(|r| r * 7919 % 500).collect());
    let hasher = LayerHasher::new(&layout, 1).expect("hasher");
    let tokens: Vec<u32> = vec![5, 900, 17, 17, 1499, 3];
    let (mut compressed, mut ids) = (Vec::new(), Vec::new());
    map.compress_into(&tokens, &mut compressed)
        .expect("compress");
    hasher
        .row_ids_into(&compressed, &[], &mut ids)
        .expect("hash");
    let sequences = [engram_store_client::token_sequence(&tokens, &[])];
    let check = |rows: &engram_store_client::Rows, seed: u64| {
        assert_eq!(rows.len(), ids.len());
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(rows.row(i), synth_row(seed, DType::Bf16, 8, id), "row {i}");
        }
    };
    let rows = client
        .lookup_ngrams("g", 1, &sequences)
        .await
        .expect("ngrams");
    assert_eq!(rows.version(), 1);
    check(&rows, seed_of(1));

    // A new version of layer 1's table: the group reads it once it is swapped in.
    let layer_rows = layout.layer(1).expect("layer 1").row_count();
    let d = data.clone();
    tokio::task::spawn_blocking(move || {
        let spec = SynthSpec {
            name: "g.layer1".into(),
            rows: layer_rows,
            row_dim: 8,
            dtype: DType::Bf16,
            seed: seed_of(2),
        };
        synth_table(&d, &spec, &WriteOptions::default(), None).expect("version 2");
    })
    .await
    .expect("writer");
    let report = client.reload(&[]).await.expect("reload");
    let line = report
        .iter()
        .find(|r| r.table == "g.layer1")
        .expect("layer");
    assert_eq!(line.outcome, pb::ReloadOutcome::Swapped as i32, "{line:?}");
    let rows = client
        .lookup_ngrams("g", 1, &sequences)
        .await
        .expect("ngrams");
    assert_eq!(rows.version(), 2);
    check(&rows, seed_of(2));
    // Pinned to the version before, through the group.
    let mut req = pb::LookupNgramsRequest {
        group: "g".into(),
        layer_id: 1,
        sequences: sequences.to_vec(),
        version: Some(1),
        ..Default::default()
    };
    let rows = client
        .lookup_ngrams_request(req.clone())
        .await
        .expect("pinned");
    assert_eq!(rows.version(), 1);
    check(&rows, seed_of(1));
    req.version = Some(7);
    let err = client
        .lookup_ngrams_request(req)
        .await
        .expect_err("not kept");
    assert_eq!(err.code(), Code::FailedPrecondition);

    // A version of the wrong shape for the group is refused; the group keeps reading version 2.
    let d = data.clone();
    tokio::task::spawn_blocking(move || {
        let spec = SynthSpec {
            name: "g.layer1".into(),
            rows: layer_rows + 1,
            row_dim: 8,
            dtype: DType::Bf16,
            seed: seed_of(3),
        };
        synth_table(&d, &spec, &WriteOptions::default(), None).expect("version 3");
    })
    .await
    .expect("writer");
    let report = client.reload(&["g.layer1"]).await.expect("reload");
    assert_eq!(report[0].outcome, pb::ReloadOutcome::Refused as i32);
    assert!(
        report[0].message.contains("Engram group \"g\""),
        "{}",
        report[0].message
    );
    let rows = client
        .lookup_ngrams("g", 1, &sequences)
        .await
        .expect("ngrams");
    assert_eq!(rows.version(), 2);
    assert_eq!(engine.group("g").expect("g").layers().count(), 2);
    server.shutdown().await.expect("shutdown");
}
