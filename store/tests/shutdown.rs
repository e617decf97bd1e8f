//! Graceful shutdown of the real binary: SIGTERM while many clients read. Health turns
//! NOT_SERVING first (a health watch opened before sees it, then ends), no new connection is
//! accepted, every request in flight finishes (streams opened before go on answering, correctly,
//! until their clients close them), requests sent afterwards fail only in the ways of a request
//! the server never took (never a cut answer: the server says it drained every request it took
//! before its grace ran out), and the process exits 0.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use engram_store::ingest::{SynthSpec, WriteOptions, synth_table};
use engram_store::table::{DType, synth_row};
use engram_store_client::{Client, proto as pb};
use futures::StreamExt;
use tokio::sync::mpsc;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const ROWS: u64 = 100_000;
const DIM: usize = 64;
const SEED: u64 = 9;

/// The server process and the lines it wrote to stderr.
struct Server {
    child: Child,
    lines: Arc<parking_lot::Mutex<Vec<String>>>,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(data: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_engram-store"))
        .args(["serve", "--data"])
        .arg(data)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--ram-cache",
            "0",
            "--shutdown-grace",
            "20",
            "--watch-interval",
            "0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start engram-store serve");
    let stderr = child.stderr.take().expect("stderr");
    let lines = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line
                    .split(" on ")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .filter(|_| line.starts_with("engram-store serving"))
                {
                    let _ = tx.send(addr.to_owned());
                }
                lines.lock().push(line);
            }
        });
    }
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("the server did not start: {:?}", lines.lock()));
    Server { child, lines, addr }
}

/// The sources of an error, outermost first.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = Vec::new();
    let mut at = e.source();
    while let Some(s) = at {
        out.push(format!("{s:?}"));
        at = s.source();
    }
    out.join(" <- ")
}

fn check(rows: &engram_store_client::Rows, ids: &[u64]) {
    for (i, &id) in ids.iter().enumerate() {
        assert_eq!(
            rows.row(i),
            synth_row(SEED, DType::Bf16, DIM, id),
            "row {id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_in_flight_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = SynthSpec {
        name: "t".into(),
        rows: ROWS,
        row_dim: DIM as u32,
        dtype: DType::Bf16,
        seed: SEED,
    };
    synth_table(dir.path(), &spec, &WriteOptions::default(), None).expect("synth");
    let mut server = start_server(dir.path());
    let url = format!("http://{}", server.addr);
    let pid = server.child.id() as libc::pid_t;

    // A health watch, open before the signal.
    let channel = tonic::transport::Endpoint::from_shared(url.clone())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut watch = HealthClient::new(channel)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.next().await.expect("a status").expect("ok");
    assert_eq!(first.status, ServingStatus::Serving as i32);

    // Streams in flight across the signal: each answered once before it.
    let mut streams = Vec::new();
    for s in 0..4u64 {
        let client = Client::builder(&url)
            .retries(0)
            .connect()
            .await
            .expect("connect");
        let (tx, rx) = mpsc::channel::<Vec<u64>>(4);
        let answers = client
            .lookup_stream("t", tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("open stream");
        let mut answers = Box::pin(answers);
        let ids: Vec<u64> = (0..500).map(|i| (i * 7919 + s * 13) % ROWS).collect();
        tx.send(ids.clone()).await.expect("send");
        let rows = answers.next().await.expect("answer").expect("ok");
        check(&rows, &ids);
        streams.push((tx, answers));
    }

    // Unary load from several connections until their requests start failing.
    let signalled = Arc::new(AtomicBool::new(false));
    let answered_after = Arc::new(AtomicU64::new(0));
    let mut loaders = Vec::new();
    for k in 0..6u64 {
        let client = Client::builder(&url)
            .retries(0)
            .connect()
            .await
            .expect("connect");
        let (signalled, answered_after) = (signalled.clone(), answered_after.clone());
        loaders.push(tokio::spawn(async move {
            let mut answered = 0u64;
            for round in 0u64.. {
                let ids: Vec<u64> = (0..2000)
                    .map(|i| (i * 31 + round * 977 + k) % ROWS)
                    .collect();
                let after = signalled.load(Ordering::Relaxed);
                let request = pb::LookupRequest {
                    table: "t".into(),
                    ids: ids.clone(),
                    ..Default::default()
                };
                match client.raw().lookup(request).await {
                    Ok(response) => {
                        let r = response.into_inner();
                        let rb = r.row_bytes as usize;
                        assert_eq!(r.rows.len(), ids.len() * rb, "a whole answer");
                        for (i, &id) in ids.iter().enumerate() {
                            assert_eq!(
                                &r.rows[i * rb..(i + 1) * rb],
                                synth_row(SEED, DType::Bf16, DIM, id),
                                "row {id}"
                            );
                        }
                        answered += 1;
                        if after {
                            answered_after.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // A request after the drain began: not taken (GOAWAY, or no listener).
                    Err(e) => return (answered, e),
                }
            }
            unreachable!("the loop ends with an error")
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // SIGTERM.
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    signalled.store(true, Ordering::Relaxed);
    let signalled_at = Instant::now();

    // Health turns NOT_SERVING, then the watch ends.
    let status = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("NOT_SERVING in time")
        .expect("a status")
        .expect("ok");
    assert_eq!(status.status, ServingStatus::NotServing as i32);
    let end = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("the watch ends during the drain");
    assert!(
        end.as_ref().is_none_or(|r| r.is_ok()),
        "the watch ends cleanly: {end:?}"
    );

    // The streams in flight go on answering, correctly, until their clients close them.
    for round in 0..3u64 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        for (s, (tx, answers)) in streams.iter_mut().enumerate() {
            let ids: Vec<u64> = (0..500)
                .map(|i| (i * 104_729 + round * 11 + s as u64) % ROWS)
                .collect();
            tx.send(ids.clone()).await.expect("send after SIGTERM");
            let rows = answers
                .next()
                .await
                .expect("answered after SIGTERM")
                .expect("ok after SIGTERM");
            check(&rows, &ids);
        }
    }
    assert!(
        server.child.try_wait().expect("status").is_none(),
        "the server waits for the streams in flight"
    );
    for (tx, mut answers) in streams {
        drop(tx);
        assert!(
            answers.next().await.is_none(),
            "the stream ends after its client closes it"
        );
    }

    // Unary requests: every answer was correct; those that failed were never taken: refused
    // (UNAVAILABLE: no listener, or a stream refused after GOAWAY) or never sent (CANCELLED by
    // the client's own connection, which closed after GOAWAY with the request still queued; a
    // stream the server cut would be an h2 error instead).
    for loader in loaders {
        let (answered, e) = loader.await.expect("loader");
        assert!(answered > 0, "each loader was answered before the signal");
        let why = chain(&e);
        let not_taken = [
            // The listener is closed.
            "ConnectionRefused",
            // A stream above the last one GOAWAY said the server takes (never processed).
            "GoAway(b\"\", NO_ERROR, Remote)",
            "REFUSED_STREAM",
            // Still queued in the client when its connection closed (never sent).
            "Canceled, \"connection closed\"",
            // Sent as the server closed the drained connection (before the client read the
            // GOAWAY): its bytes were unread, so the kernel reset the connection. The server
            // closes a connection only once every stream it took has finished ("drained" below).
            "ConnectionReset",
            "BrokenPipe",
        ];
        assert!(
            not_taken.iter().any(|n| why.contains(n)),
            "a request was lost: {:?} {}: {why}",
            e.code(),
            e.message()
        );
    }

    // The process exits 0, soon after its last request.
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("status") {
            break status;
        }
        assert!(
            signalled_at.elapsed() < Duration::from_secs(15),
            "still running: {:?}",
            server.lines.lock()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit {status}: {:?}", server.lines.lock());
    // New connections are refused.
    assert!(
        Client::builder(&url)
            .connect_timeout(Duration::from_secs(1))
            .connect()
            .await
            .is_err()
    );
    std::thread::sleep(Duration::from_millis(100));
    let log = server.lines.lock().join("\n");
    assert!(log.contains("SIGTERM: shutting down"), "{log}");
    let draining = log
        .lines()
        .find(|l| l.contains("draining"))
        .unwrap_or_else(|| panic!("no draining line: {log}"));
    let in_flight: u64 = draining
        .split("requests_in_flight=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{draining}"));
    // At least the four streams and the health watch were in flight.
    assert!(in_flight >= 5, "{draining}");
    assert!(
        log.contains("drained: every request in flight finished"),
        "{log}"
    );
    assert!(log.contains("engram-store stopped"), "{log}");
    println!(
        "{} unary requests answered after SIGTERM (in flight when it came)",
        answered_after.load(Ordering::Relaxed)
    );
}
