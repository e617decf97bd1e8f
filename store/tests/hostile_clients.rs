//! What a hostile or careless client on the same host can do to a running server (issue #11),
//! against the real binary in its own process: every abuse scenario of
//! `engram_store_driver::abuse` (undecodable bodies, a region flood, truncating a region, a
//! symlink race on paths, a prefetch flood, clients that never read, idle connections past the
//! cap) must leave the server serving a bystander, within its memory bound; the path race also
//! runs as an unprivileged user (uid 65534) when the test runs as root; running out of file
//! descriptors must not make the accept loop spin; and a damaged table must not keep the others
//! from being served.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use engram_store::engine::{Engine, EngineConfig};
use engram_store::table::DType;
use engram_store_driver::abuse::{AbuseConfig, run};

const ROWS: u64 = 200_000;
const MIB: u64 = 1 << 20;

/// The binary, serving `data` on a free port with a local socket and the given extra flags;
/// optionally with a descriptor limit.
struct Server {
    child: Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start_binary(data: &Path, extra: &[&str], nofile: Option<u64>) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_engram-store"));
    cmd.arg("serve")
        .arg("--data")
        .arg(data)
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--local-socket")
        .arg(dir.path().join("local.sock"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(limit) = nofile {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child before exec.
        unsafe {
            cmd.pre_exec(move || {
                let l = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let child = cmd.spawn().expect("start engram-store serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "the server did not start listening"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Server {
        child,
        addr,
        _dir: dir,
    }
}

fn table(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    common::random_table(&data, "t", DType::Bf16, 80, ROWS, 4096, 7);
    data
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / hz
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_abuse_scenario_leaves_the_server_serving_within_its_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = table(dir.path());
    let ram = 16 * MIB;
    let budget = 64 * MIB;
    let server = start_binary(
        &data,
        &[
            "--ram-cache",
            "16MiB",
            "--answer-budget",
            "64MiB",
            "--max-connections",
            "40",
            "--idle-timeout",
            "1",
        ],
        None,
    );
    let mut config = AbuseConfig::new(server.addr);
    config.duration = Duration::from_secs(2);
    config.rows = Some(ROWS as usize);
    config.connections = 48;
    let reports = run(&config).await.expect("abuse run");
    assert_eq!(reports.len(), engram_store_driver::abuse::SCENARIOS.len());
    let baseline = reports.iter().map(|r| r.rss_before).min().unwrap_or(0);
    // The stated bound (README, "Memory bound"): tier budgets + fixed overhead + the answer
    // budget + the prefetch queue (4M row ids of 8 bytes; the prefetch flood fills it and it
    // drains during the scenarios after it), with room for the runtime, requests being decoded
    // and allocator slack.
    let prefetch_queue = 4 * MIB * 8;
    let bound = baseline + ram + budget + prefetch_queue + 128 * MIB;
    for r in &reports {
        assert!(r.finding.held, "{}: {}", r.name, r.finding.detail);
        assert!(
            r.rss_peak <= bound,
            "{}: RSS peaked at {} MB, over the bound of {} MB",
            r.name,
            r.rss_peak / MIB,
            bound / MIB
        );
        assert_eq!(
            r.bystander.failed, 0,
            "{}: the bystander failed: {:?}",
            r.name, r.bystander.first_error
        );
        assert!(
            r.bystander.ok > 0,
            "{}: the bystander was never answered",
            r.name
        );
    }
}

/// Past its descriptor limit the server backs off instead of spinning, closes idle connections,
/// and serves new clients once it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_accept_loop_backs_off_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = table(dir.path());
    // A cap above the descriptor limit, so accept itself runs out of descriptors.
    let server = start_binary(
        &data,
        &[
            "--ram-cache",
            "0",
            "--max-connections",
            "4096",
            "--idle-timeout",
            "1",
        ],
        Some(96),
    );
    let pid = server.child.id();
    let idle: Vec<_> = (0..200)
        .filter_map(|_| std::net::TcpStream::connect(server.addr).ok())
        .collect();
    let cpu_before = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_seconds(pid) - cpu_before;
    assert!(
        spent < 0.5,
        "the server used {spent:.2} s of CPU in 2 s with no work: the accept loop spins"
    );
    drop(idle);
    // Idle connections are closed after a second; a new client is then served.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let served = async {
            let client = engram_store_client::Client::builder(format!("http://{}", server.addr))
                .retries(0)
                .connect()
                .await?;
            client.lookup("t", &[1, 2, 3]).await
        }
        .await;
        if served.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new client served after the flood: {served:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The path race as an unprivileged user against a root-owned 0600 file in a 0700 directory:
/// every path registration refused, the file untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_symlink_race_as_an_unprivileged_user_lands_nowhere() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP: the race runs as uid 65534, which needs a test running as root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = table(dir.path());
    let server = start_binary(&data, &["--ram-cache", "0"], None);
    let vault = tempfile::tempdir().expect("vault");
    let secret = vault.path().join("secret");
    std::fs::write(&secret, b"root's own bytes").expect("secret");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::set_permissions(vault.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let addr = server.addr;
    let target = secret.clone();
    // A thread of its own, made uid/gid 65534 with raw syscalls (which, unlike libc's setuid,
    // change only the calling thread), runs the race with a runtime of its own.
    // A root that cannot become uid 65534 (a user namespace that does not map it, a sandbox
    // that refuses setresuid) cannot run the race: the test says so and skips.
    let race = std::thread::spawn(move || {
        // One at a time, in this order (groups and gid while still root), stopping at the
        // first refusal with its errno.
        let calls: [(&str, libc::c_long, [libc::c_long; 3]); 3] = [
            ("setgroups", libc::SYS_setgroups, [0, 0, 0]), // no supplementary groups (NULL list)
            ("setresgid", libc::SYS_setresgid, [65534; 3]),
            ("setresuid", libc::SYS_setresuid, [65534; 3]),
        ];
        let refused = calls.iter().find_map(|(call, nr, a)| {
            // SAFETY: plain syscalls changing this thread's credentials only.
            let rc = unsafe { libc::syscall(*nr, a[0], a[1], a[2]) };
            (rc != 0).then(|| format!("{call}: {}", std::io::Error::last_os_error()))
        });
        if let Some(why) = refused {
            return Err(why);
        }
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 65534);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Ok(rt.block_on(async move {
            let mut config = AbuseConfig::new(addr);
            config.scenarios = vec!["path-race".into()];
            config.duration = Duration::from_secs(3);
            config.protected = Some(target);
            run(&config).await
        }))
    })
    .join()
    .expect("race thread");
    let report = match race {
        Err(why) => {
            println!("SKIP: this root cannot become uid 65534 ({why}), so the race cannot run");
            return;
        }
        Ok(report) => report.unwrap_or_else(|e| panic!("the race as uid 65534: {e:#}")),
    };
    assert!(report[0].finding.held, "{}", report[0].finding.detail);
    assert_eq!(
        std::fs::read(&secret).expect("read secret"),
        b"root's own bytes"
    );
}

/// A table that cannot be opened is reported (Stats, health) and skipped; the others serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_table_does_not_keep_the_others_from_being_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let model = common::random_table(&data, "good", DType::U8, 16, 100, 4096, 1);
    common::random_table(&data, "bad", DType::U8, 16, 100, 4096, 2);
    let manifest = data.join("bad/v00000001/manifest.json");
    std::fs::write(&manifest, b"{ not json").expect("damage the manifest");
    let engine = Engine::open(EngineConfig::new(&data)).expect("the engine opens anyway");
    assert!(engine.table("good").is_ok());
    assert!(engine.table("bad").is_err());
    let unavailable = engine.unavailable();
    assert_eq!(unavailable.len(), 1);
    assert_eq!(unavailable[0].name, "bad");
    let reason = unavailable[0].error.to_string();
    assert!(reason.contains("manifest"), "{reason}");

    let (_engine, server, client) = common::start(&data, 0, Default::default()).await;
    let rows = client
        .lookup("good", &[3, 99])
        .await
        .expect("the good table serves");
    assert_eq!(rows.row(0), model.row(3));
    let stats = client.stats(false).await.expect("stats");
    assert_eq!(stats.unavailable.len(), 1);
    assert_eq!(stats.unavailable[0].name, "bad");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = |service: &str| tonic_health::pb::HealthCheckRequest {
        service: service.into(),
    };
    let bad = health
        .check(status("engram_store.v1.EmbeddingStore/table/bad"))
        .await
        .expect("health of the bad table")
        .into_inner();
    assert_eq!(
        bad.status,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );
    let good = health
        .check(status("engram_store.v1.EmbeddingStore/table/good"))
        .await
        .expect("health of the good table")
        .into_inner();
    assert_eq!(
        good.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    server.shutdown().await.expect("shutdown");
}
