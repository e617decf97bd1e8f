//! The VRAM tier behind the gRPC service: a clear startup error where no GPU can be had, a
//! clear CLI error for a bad `--gpu-device` list or `--gpu-weight`, a warning for a weight on a
//! table not served, and, on a GPU machine with `--features cuda`, rows served from VRAM after a
//! refresh, bit-exact; each table's VRAM tier sized by its weight; a buffer on a device not
//! served refused with FAILED_PRECONDITION; a refresh below `--gpu-refresh-min-rows` deferred,
//! at most ten periods; and, with 2+ GPUs, one VRAM tier per device, each
//! filled with the rows asked for into buffers on its device.

mod common;

use common::random_table;
use engram_store::engine::{Engine, EngineConfig};
use engram_store::table::DType;

fn gpu_config(data: &std::path::Path) -> EngineConfig {
    let mut c = EngineConfig::new(data);
    c.ram_cache_bytes = 1 << 20;
    c.gpu_budget_bytes = 256 << 20;
    c.gpu_devices = "0".parse().expect("one device");
    c.gpu_refresh = std::time::Duration::from_millis(100);
    c.max_batch_ids = 1 << 16;
    c
}

#[cfg(feature = "cuda")]
fn gpu_count() -> usize {
    if engram_store_cache::gpu::probe(0).is_err() {
        return 0;
    }
    engram_store_cache::gpu::CudaContext::device_count().map_or(0, |n| n.max(0) as usize)
}

#[cfg(not(feature = "cuda"))]
fn gpu_count() -> usize {
    0
}

fn gpu_present() -> bool {
    gpu_count() > 0
}

/// The VRAM tier's entry of a Stats answer, if it has one.
fn gpu_tier(
    stats: &engram_store_proto::v1::StatsResponse,
) -> Option<&engram_store_proto::v1::TierStats> {
    stats.tiers.iter().find(|t| t.tier == "gpu")
}

/// `engram-store serve` on `data` with `flags`, which it must refuse: its stderr (also printed),
/// after checking it exited non-zero without a panic.
fn refused_serve(data: &std::path::Path, flags: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_engram-store"))
        .args(["serve", "--data"])
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .args(flags)
        .output()
        .expect("run engram-store");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{flags:?} was accepted");
    assert!(!stderr.contains("panicked"), "{flags:?}: {stderr}");
    println!("{flags:?}: {}", stderr.lines().next().unwrap_or(""));
    stderr
}

#[test]
fn a_bad_gpu_device_list_is_a_clear_cli_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (list, says) in [
        ("0,0", "GPU device 0 is listed twice in \"0,0\""),
        ("x", "GPU device \"x\" in \"x\" is not a device ordinal"),
        ("0,,1", "has an empty item"),
    ] {
        let stderr = refused_serve(dir.path(), &["--gpu-device", list]);
        assert!(stderr.contains(says), "--gpu-device {list}: {stderr}");
        assert!(
            stderr.contains("--gpu-device"),
            "--gpu-device {list}: {stderr}"
        );
    }
}

#[test]
fn a_bad_gpu_weight_is_a_clear_cli_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (weights, says) in [
        (&["v41.layer1"][..], "\"v41.layer1\" has no '='"),
        (&["=2"][..], "\"=2\" names no table"),
        (
            &["t=two"][..],
            "weight \"two\" of table \"t\" is not a number",
        ),
        (
            &["t=0"][..],
            "weight 0 of table \"t\" is not a positive finite number",
        ),
        (
            &["t=-1"][..],
            "weight -1 of table \"t\" is not a positive finite number",
        ),
        (
            &["t=NaN"][..],
            "weight NaN of table \"t\" is not a positive finite number",
        ),
        (
            &["t=inf"][..],
            "weight inf of table \"t\" is not a positive finite number",
        ),
        (
            &["t=2", "t=3"][..],
            "table \"t\" is given a weight twice (2 and 3)",
        ),
    ] {
        let flags: Vec<&str> = weights.iter().flat_map(|w| ["--gpu-weight", w]).collect();
        let stderr = refused_serve(dir.path(), &flags);
        assert!(stderr.contains(says), "--gpu-weight {weights:?}: {stderr}");
        assert!(
            stderr.contains("--gpu-weight"),
            "--gpu-weight {weights:?}: {stderr}"
        );
    }
}

#[test]
fn a_gpu_weight_on_a_table_not_served_is_a_warning() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    random_table(dir.path(), "t", DType::Bf16, 8, 100, 4096, 1);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_engram-store"))
        .args(["serve", "--data"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--ram-cache", "0"])
        .args(["--gpu-weight", "t=2", "--gpu-weight", "v41.layer1=3"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start engram-store serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let serving = line.starts_with("engram-store serving");
            let _ = tx.send(line);
            if serving {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(30)) {
        let serving = line.starts_with("engram-store serving");
        lines.push(line);
        if serving {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        lines.iter().any(|l| l.starts_with("engram-store serving")),
        "the server did not start: {lines:?}"
    );
    let warned: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("WARN") && l.contains("--gpu-weight"))
        .collect();
    assert_eq!(warned.len(), 1, "one warning, for v41.layer1: {lines:?}");
    assert!(
        warned[0].contains("table=\"v41.layer1\"") && warned[0].contains("not served"),
        "{warned:?}"
    );
    println!("{}", warned[0]);
}

#[cfg(feature = "cuda")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_table_vram_tier_is_sized_by_its_weight() {
    if !gpu_present() {
        println!("SKIP: no usable GPU (or a build without --features cuda)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    random_table(dir.path(), "v41.layer1", DType::Bf16, 80, 100_000, 4096, 7);
    random_table(dir.path(), "v41.layer14", DType::Bf16, 80, 100_000, 4096, 8);
    let mut c = gpu_config(dir.path());
    let budget = c.gpu_budget_bytes;
    c.gpu_weights =
        engram_store::engine::GpuWeights::new(["v41.layer1=2".parse().expect("weight")])
            .expect("weights");
    let engine = Engine::open(c).expect("open engine");
    let capacity = |name: &str| {
        engine
            .table(name)
            .expect("table")
            .tier_stats()
            .into_iter()
            .find(|(kind, _)| *kind == engram_store_cache::TierKind::Gpu)
            .map(|(_, s)| s.capacity_bytes)
            .unwrap_or_else(|| panic!("{name} has no VRAM tier"))
    };
    let (first, fourteenth) = (capacity("v41.layer1"), capacity("v41.layer14"));
    // Equal tables, weights 2:1: shares of 2/3 and 1/3 of the budget, each tier as large as
    // its share allows (its index grows in steps, so it may not use the whole share).
    assert!(first <= budget * 2 / 3, "{first} of {budget}");
    assert!(fourteenth <= budget / 3, "{fourteenth} of {budget}");
    assert!(first > fourteenth, "{first} vs {fourteenth}");
    println!("VRAM tiers: layer 1 {first} B, layer 14 {fourteenth} B of {budget} B");
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
        let gpu = gpu_tier(&stats);
        assert_eq!(
            gpu.map(|t| t.device),
            Some(Some(0)),
            "the VRAM tier of GPU 0"
        );
        gpu_hits = gpu.map_or(0, |t| t.hits);
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

/// `--gpu-refresh-min-rows`: a refresh wanting fewer rows than the minimum waits, but for at
/// most `MAX_DEFERRED_REFRESHES` periods in a row.
#[cfg(feature = "cuda")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_refresh_waits_at_most_ten_periods() {
    if !gpu_present() {
        println!("SKIP: no usable GPU (or a build without --features cuda)");
        return;
    }
    let period = std::time::Duration::from_millis(200);
    let dir = tempfile::tempdir().expect("tempdir");
    random_table(dir.path(), "t", DType::Bf16, 80, 200_000, 4096, 3);
    let mut config = gpu_config(dir.path());
    config.gpu_refresh = period;
    config.gpu_refresh_min_rows = 1_000_000;
    let (_engine, server, client) = common::start_with(config).await;
    let hot: Vec<u64> = (0..3_000u64).map(|i| i * 61 % 200_000).collect();
    let hinted = std::time::Instant::now();
    client.prefetch("t", &hot).await.expect("prefetch");
    let resident = || async {
        let stats = client.stats(false).await.expect("stats");
        gpu_tier(&stats).map_or(0, |t| t.resident_rows)
    };
    // Five periods in: 3,000 rows wanted, fewer than the minimum, so nothing has entered.
    tokio::time::sleep(period * 5).await;
    assert_eq!(resident().await, 0, "a refresh below its minimum ran");
    // After the tenth deferral in a row the next refresh runs whatever it wants.
    let limit = period * (engram_store_cache::tier::MAX_DEFERRED_REFRESHES + 1) * 4;
    while resident().await < hot.len() as u64 {
        assert!(
            hinted.elapsed() < limit,
            "the deferred rows never entered VRAM"
        );
        tokio::time::sleep(period / 2).await;
    }
    println!(
        "{} rows entered VRAM {:.1} s after the hint (deferred refreshes of {} ms)",
        hot.len(),
        hinted.elapsed().as_secs_f64(),
        period.as_millis()
    );
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_on_a_device_not_served_is_failed_precondition() {
    if !gpu_present() {
        println!("SKIP: no usable GPU (or a build without --features cuda)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    random_table(dir.path(), "t", DType::Bf16, 80, 1_000, 4096, 4);
    let (_engine, server, client) = common::start_with(gpu_config(dir.path())).await;
    let pb = engram_store_proto::v1::RegisterRegionRequest {
        kind: Some(
            engram_store_proto::v1::register_region_request::Kind::CudaIpc(
                engram_store_proto::v1::CudaIpcRegion {
                    ipc_handle: vec![0u8; 64].into(),
                    offset: 0,
                    size: 4096,
                    device: 1,
                },
            ),
        ),
    };
    let e = client
        .raw()
        .register_region(pb)
        .await
        .expect_err("GPU 1 is not served");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    assert!(
        e.message().contains("GPU 1") && e.message().contains("GPU 0"),
        "names the buffer's device and the devices served: {e}"
    );
    println!("refused as expected: {}", e.message());
    server.shutdown().await.expect("shutdown");
}

/// Rows `ids` of `table` written into a fresh buffer on `device` through the engine, as a
/// LookupInto or channel into a CUDA IPC region on that device is served, read back to the host.
/// Returns the rows and the VRAM hits.
#[cfg(feature = "cuda")]
async fn rows_on_device(
    table: &engram_store::engine::ServedTable,
    device: usize,
    ids: &[u64],
) -> Result<(Vec<u8>, u64), engram_store::engine::LookupError> {
    use engram_store_cache::gpu::{CudaContext, DevicePtr};
    let rb = table.manifest().row_bytes as usize;
    let ctx = CudaContext::new(device).expect("open the device");
    let stream = ctx.default_stream();
    let buf = stream
        .alloc_zeros::<u8>(ids.len() * rb)
        .expect("allocate a device buffer");
    let ptr = {
        let (p, _sync) = buf.device_ptr(&stream);
        p
    };
    stream.synchronize().expect("allocation done");
    let hits = table.lookup_into_device(device, ids, ptr).await?;
    let rows = stream.clone_dtoh(&buf).expect("read the buffer back");
    Ok((rows, hits))
}

#[cfg(feature = "cuda")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_into_a_device_buffer_come_through_its_device_tier() {
    if !gpu_present() {
        println!("SKIP: no usable GPU (or a build without --features cuda)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let model = random_table(dir.path(), "t", DType::Bf16, 80, 100_000, 4096, 5);
    let engine = Engine::open(gpu_config(dir.path())).expect("open engine");
    let table = engine.table("t").expect("table t");
    assert_eq!(table.gpu_devices().collect::<Vec<_>>(), vec![0]);
    let hot: Vec<u64> = (0..2_000u64).map(|i| i * 41 % 100_000).collect();
    let mut hits = 0;
    for round in 0..50 {
        let (rows, h) = rows_on_device(&table, 0, &hot)
            .await
            .expect("rows on GPU 0");
        for (i, &id) in hot.iter().enumerate() {
            let rb = model.row(id).len();
            assert_eq!(
                &rows[i * rb..(i + 1) * rb],
                model.row(id),
                "row {id} in round {round}"
            );
        }
        hits = h;
        if hits == hot.len() as u64 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        hits,
        hot.len() as u64,
        "the rows asked for on GPU 0 did not fill its tier"
    );
    if gpu_count() > 1 {
        let e = rows_on_device(&table, 1, &hot[..1])
            .await
            .expect_err("GPU 1 has no tier");
        assert!(e.to_string().contains("no GPU tier on GPU 1"), "{e}");
    }
    println!("{hits} of {} rows from GPU 0's VRAM tier", hot.len());
}

#[cfg(feature = "cuda")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_device_tier_fills_with_the_rows_asked_for_on_its_device() {
    let count = gpu_count();
    if count < 2 {
        println!("SKIP: needs 2 GPUs (this machine has {count})");
        return;
    }
    let devices: Vec<usize> = (0..count.min(8)).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let rows = 400_000u64;
    let model = random_table(dir.path(), "t", DType::Bf16, 80, rows, 4096, 6);
    let mut c = gpu_config(dir.path());
    c.gpu_devices = engram_store::engine::GpuDevices::new(devices.clone()).expect("devices");
    let engine = Engine::open(c).expect("open engine");
    let table = engine.table("t").expect("table t");
    assert_eq!(table.gpu_devices().collect::<Vec<_>>(), devices);
    // Each device asks for its own rows (as a tensor-parallel rank asks for its own heads):
    // device k for ids k, k + n, k + 2n, ... of the first 4,000 * n.
    let n = devices.len() as u64;
    let asked = |k: usize| -> Vec<u64> { (0..4_000u64).map(|i| i * n + k as u64).collect() };
    let mut filled = vec![false; devices.len()];
    for _ in 0..60 {
        for (k, &d) in devices.iter().enumerate() {
            let ids = asked(k);
            let (got, hits) = rows_on_device(&table, d, &ids)
                .await
                .expect("rows on device");
            for (i, &id) in ids.iter().enumerate() {
                let rb = model.row(id).len();
                assert_eq!(
                    &got[i * rb..(i + 1) * rb],
                    model.row(id),
                    "row {id} on GPU {d}"
                );
            }
            filled[k] = hits == ids.len() as u64;
        }
        if filled.iter().all(|&f| f) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(filled.iter().all(|&f| f), "tiers filled: {filled:?}");
    // Each tier holds the rows asked for on its device and no other: its resident rows are
    // exactly those, and the host requests' tier (the first) was not fed the others'.
    let stats = engine.stats(false);
    for (k, &d) in devices.iter().enumerate() {
        let gpu = stats
            .tiers
            .iter()
            .find(|(kind, s)| {
                *kind == engram_store_cache::TierKind::Gpu && s.device == Some(d as u32)
            })
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| panic!("no stats entry for GPU {d}"));
        assert_eq!(
            gpu.resident_rows,
            asked(k).len() as u64,
            "GPU {d} holds the rows asked for on it, and only those"
        );
        println!(
            "GPU {d}: {} resident rows, {} hits",
            gpu.resident_rows, gpu.hits
        );
    }
}
