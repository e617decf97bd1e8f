//! Metrics as an operator sees them: a real Prometheus server (Debian's `prometheus` package,
//! started here on a free port) scrapes a live engram-store's `/metrics` every second, and the
//! test asks Prometheus over its HTTP API (`/api/v1/query`) for values it can work out from the
//! traffic it sent: requests by RPC and status code (OK, NOT_FOUND, UNAUTHENTICATED, DATA_LOSS
//! from a corrupted block), rows and bytes served, rows per tier, checksum failures, the disk
//! read histogram against the engine's own count, budgets, versions, and counters that keep
//! growing across a `Stats(reset)`. Without a `prometheus` binary it prints `SKIP:` and passes.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::random_table;
use engram_store::access::TokenSet;
use engram_store::edge::EdgeOptions;
use engram_store::engine::{Engine, EngineConfig};
use engram_store::metrics::{StoreMetrics, spawn_metrics_server};
use engram_store::server::{ListenAddr, ServerOptions, spawn_server_with};
use engram_store::table::{DType, data_file_name, version_dir_name};
use engram_store_cache::TierKind;
use engram_store_cache::io::IoEngineKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

const TOKEN: &str = "read-token-for-metrics";
const RAM_BUDGET: u64 = 64 << 10;
/// 160-byte rows, 25 to a 4 KiB block; block 3 (rows 75..100) is corrupted.
const ROW_BYTES: u64 = 160;

/// The Prometheus binary: `PROMETHEUS_BIN`, else `prometheus` on the PATH.
fn prometheus_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PROMETHEUS_BIN") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("prometheus"))
            .find(|p| p.is_file())
    })
}

/// A Prometheus server, killed when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

async fn start_prometheus(bin: &Path, dir: &Path, target: SocketAddr) -> Prometheus {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: engram-store\n    static_configs:\n      \
             - targets: ['{target}']\n"
        ),
    )
    .expect("write prometheus.yml");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
    let child = Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start prometheus");
    let prometheus = Prometheus { child, addr };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, _)) = http_get(addr, "/-/ready").await {
            return prometheus;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus not ready in 60 s: {}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// GET `path` over HTTP/1.0: the status and the body.
async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The values of a PromQL instant query, one per series.
async fn query(prometheus: &Prometheus, promql: &str) -> Vec<f64> {
    let (status, body) = http_get(
        prometheus.addr,
        &format!("/api/v1/query?query={}", url_encode(promql)),
    )
    .await
    .expect("query prometheus");
    assert_eq!(status, 200, "{promql}: {body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["status"], "success", "{promql}: {body}");
    json["data"]["result"]
        .as_array()
        .expect("result vector")
        .iter()
        .map(|r| {
            r["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .expect("sample value")
        })
        .collect()
}

/// The one value of `promql` (panics on none or several).
async fn one(prometheus: &Prometheus, promql: &str) -> f64 {
    let v = query(prometheus, promql).await;
    assert_eq!(v.len(), 1, "{promql}: {v:?}");
    v[0]
}

/// Waits until Prometheus holds a scrape that started after now.
async fn wait_for_scrape_after_now(prometheus: &Prometheus) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = query(prometheus, "timestamp(engram_store_uptime_seconds)").await;
        if t.first().is_some_and(|&t| t > now) {
            return;
        }
        assert!(Instant::now() < deadline, "no scrape after {now} in 30 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_what_the_traffic_did() {
    let Some(bin) = prometheus_bin() else {
        println!("SKIP: no prometheus binary (apt-get install prometheus, or set PROMETHEUS_BIN)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let model = random_table(dir.path(), "t", DType::Bf16, 80, 1000, 4096, 5);
    let data = dir
        .path()
        .join("t")
        .join(version_dir_name(1))
        .join(data_file_name(0));
    let mut bytes = std::fs::read(&data).expect("read data file");
    bytes[4096 * (1 + 3) + 100] ^= 0x01; // header block, then data block 3
    std::fs::write(&data, bytes).expect("corrupt block 3");

    let mut c = EngineConfig::new(dir.path());
    c.ram_cache_bytes = RAM_BUDGET;
    c.io_engine = IoEngineKind::Pread;
    c.max_batch_ids = 10_000;
    let engine = Arc::new(Engine::open(c).expect("open engine"));
    let metrics = Arc::new(StoreMetrics::with_own_recorder().expect("metrics"));
    let metrics_server = spawn_metrics_server(
        metrics.clone(),
        engine.clone(),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("metrics endpoint");
    let server = spawn_server_with(
        engine.clone(),
        ListenAddr::Tcp("127.0.0.1:0".parse().expect("addr")),
        ServerOptions {
            edge: EdgeOptions {
                tokens: Some(Arc::new(
                    TokenSet::parse(&format!("read:{TOKEN}")).expect("tokens"),
                )),
                metrics: Some(metrics.clone()),
                ..Default::default()
            },
            ..ServerOptions::default()
        },
    )
    .await
    .expect("server");
    let client = engram_store_client::Client::builder(format!("http://{}", server.addr))
        .retries(0)
        .token(TOKEN)
        .connect()
        .await
        .expect("connect");
    let stranger = engram_store_client::Client::builder(format!("http://{}", server.addr))
        .retries(0)
        .connect()
        .await
        .expect("connect");

    // The endpoint itself: text format, 404 elsewhere.
    let (status, text) = http_get(metrics_server.addr, "/metrics")
        .await
        .expect("GET /metrics");
    assert_eq!(status, 200);
    assert!(text.contains("# TYPE engram_store_disk_read_duration_seconds histogram"));
    assert_eq!(
        http_get(metrics_server.addr, "/").await.expect("GET /").0,
        404
    );

    let prometheus_dir = tempfile::tempdir().expect("tempdir");
    let prometheus = start_prometheus(&bin, prometheus_dir.path(), metrics_server.addr).await;

    // Phase 1: 40 lookups of up to 10 distinct rows (none in the corrupt block), 3 of an unknown
    // table, 2 without a token, 1 of a corrupt row.
    let mut asked = 0u64;
    for k in 0..40u64 {
        // Rows 0..300 over and over, so the RAM tier has hits.
        let ids: Vec<u64> = (0..10).map(|j| (k * 3 + j * 11) % 300).collect();
        let ids: Vec<u64> = ids.into_iter().filter(|r| !(75..100).contains(r)).collect();
        asked += ids.len() as u64;
        let rows = client.lookup("t", &ids).await.expect("lookup");
        assert_eq!(rows.row(0), model.row(ids[0]));
    }
    for _ in 0..3 {
        assert_eq!(
            client.lookup("nope", &[1]).await.expect_err("404").code(),
            Code::NotFound
        );
    }
    for _ in 0..2 {
        let e = stranger.lookup("t", &[1]).await.expect_err("no token");
        assert_eq!(e.code(), Code::Unauthenticated);
    }
    let e = client.lookup("t", &[80]).await.expect_err("corrupt");
    assert_eq!(e.code(), Code::DataLoss);
    wait_for_scrape_after_now(&prometheus).await;

    let p = &prometheus;
    assert_eq!(one(p, "up{job=\"engram-store\"}").await, 1.0);
    let lookups =
        |code: &str| format!("engram_store_requests_total{{rpc=\"Lookup\",code=\"{code}\"}}");
    assert_eq!(one(p, &lookups("OK")).await, 40.0);
    assert_eq!(one(p, &lookups("NOT_FOUND")).await, 3.0);
    assert_eq!(one(p, &lookups("UNAUTHENTICATED")).await, 2.0);
    assert_eq!(one(p, &lookups("DATA_LOSS")).await, 1.0);
    assert_eq!(
        one(
            p,
            "engram_store_request_duration_seconds_count{rpc=\"Lookup\"}"
        )
        .await,
        46.0
    );
    // Explicit buckets: 17 bounds and +Inf, and the top one holds every request.
    assert_eq!(
        one(
            p,
            "count(engram_store_request_duration_seconds_bucket{rpc=\"Lookup\"})"
        )
        .await,
        18.0
    );
    assert_eq!(
        one(
            p,
            "engram_store_request_duration_seconds_bucket{rpc=\"Lookup\",le=\"10\"}"
        )
        .await,
        46.0
    );
    assert_eq!(one(p, "engram_store_served_rows_total").await, asked as f64);
    assert_eq!(
        one(p, "engram_store_served_bytes_total").await,
        (asked * ROW_BYTES) as f64
    );
    // Every row asked passes the RAM tier; what it misses goes to disk, where one failed.
    let tier = |tier: &str, result: &str| {
        format!("engram_store_tier_rows_total{{table=\"t\",tier=\"{tier}\",result=\"{result}\"}}")
    };
    let ram_hit = one(p, &tier("ram", "hit")).await;
    let ram_miss = one(p, &tier("ram", "miss")).await;
    assert_eq!(ram_hit + ram_miss, (asked + 1) as f64);
    assert!(
        ram_miss > 0.0 && ram_hit > 0.0,
        "hits {ram_hit} misses {ram_miss}"
    );
    assert_eq!(one(p, &tier("nvme", "hit")).await, ram_miss - 1.0);
    assert_eq!(one(p, &tier("nvme", "miss")).await, 1.0);
    assert_eq!(
        one(p, "engram_store_checksum_failures_total{table=\"t\"}").await,
        1.0
    );
    assert!(one(p, "engram_store_disk_reads_total{table=\"t\"}").await > 0.0);
    assert_eq!(
        one(p, "engram_store_disk_reads_in_flight{table=\"t\"}").await,
        0.0
    );
    let nvme_serves = engine
        .stats(false)
        .tiers
        .iter()
        .find(|(k, _)| *k == TierKind::Nvme)
        .map(|(_, s)| s.latency.count)
        .expect("nvme tier");
    assert!(nvme_serves > 0);
    assert_eq!(
        one(p, "engram_store_disk_read_duration_seconds_count").await,
        nvme_serves as f64
    );
    assert_eq!(
        one(
            p,
            "engram_store_disk_read_duration_seconds_bucket{le=\"+Inf\"}"
        )
        .await,
        nvme_serves as f64
    );
    let median = one(
        p,
        "histogram_quantile(0.5, engram_store_disk_read_duration_seconds_bucket)",
    )
    .await;
    assert!(median > 0.0 && median < 6.5, "median disk read {median} s");
    assert_eq!(
        one(p, "engram_store_tier_budget_bytes{tier=\"ram\"}").await,
        RAM_BUDGET as f64
    );
    let resident = one(
        p,
        "engram_store_tier_resident_bytes{table=\"t\",tier=\"ram\"}",
    )
    .await;
    let capacity = one(
        p,
        "engram_store_tier_capacity_bytes{table=\"t\",tier=\"ram\"}",
    )
    .await;
    assert!(resident > 0.0 && capacity > 0.0 && capacity <= RAM_BUDGET as f64);
    assert!(
        one(
            p,
            "engram_store_tier_resident_rows{table=\"t\",tier=\"ram\"}"
        )
        .await
            > 0.0
    );
    assert_eq!(one(p, "engram_store_table_version{table=\"t\"}").await, 1.0);
    assert_eq!(one(p, "engram_store_table_rows{table=\"t\"}").await, 1000.0);
    assert_eq!(one(p, "engram_store_tables").await, 1.0);
    assert_eq!(one(p, "engram_store_regions_open").await, 0.0);
    assert_eq!(one(p, "engram_store_channels_open").await, 0.0);
    assert!(one(p, "engram_store_process_resident_memory_bytes").await > (1 << 20) as f64);
    assert_eq!(
        one(p, "engram_store_requests_in_flight{rpc=\"Lookup\"}").await,
        0.0
    );

    // Phase 2: Stats(reset) zeroes the engine's counters; the exported ones keep counting.
    client.stats(true).await.expect("stats reset");
    let mut more = 0u64;
    for k in 0..5u64 {
        let ids: Vec<u64> = (0..10).map(|j| 200 + k * 10 + j).collect();
        more += ids.len() as u64;
        client.lookup("t", &ids).await.expect("lookup");
    }
    assert!(more < asked, "phase 2 must be smaller to show the fold");
    wait_for_scrape_after_now(&prometheus).await;
    assert_eq!(
        one(p, "engram_store_served_rows_total").await,
        (asked + more) as f64
    );
    assert_eq!(one(p, &lookups("OK")).await, 45.0);
    assert_eq!(
        one(p, "engram_store_requests_total{rpc=\"Stats\",code=\"OK\"}").await,
        1.0
    );
    assert_eq!(
        one(p, "engram_store_checksum_failures_total{table=\"t\"}").await,
        1.0
    );

    drop(prometheus);
    server.shutdown().await.expect("shutdown");
}
