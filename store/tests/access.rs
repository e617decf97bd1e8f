//! TLS, mutual TLS and bearer tokens over real gRPC, with certificates made here (rcgen): every
//! auth case (no token, a wrong one, a read token on read and on admin RPCs, an admin token on
//! each admin RPC), health and reflection open to anyone, and TLS refusing plaintext, an
//! unknown CA and, with a client CA, a client without a certificate from it.

mod common;

use std::sync::Arc;

use common::pki::{pki, tls_files};
use common::{Model, random_table};
use engram_store::access::{TlsFiles, TokenSet};
use engram_store::edge::EdgeOptions;
use engram_store::engine::{Engine, EngineConfig};
use engram_store::server::{ListenAddr, RunningServer, ServerOptions, spawn_server_with};
use engram_store::table::DType;
use engram_store_client::{Client, ClientError};
use engram_store_proto::v1 as pb;
use tonic::Code;

const READ: &str = "r-7f3a9c21e0";
const ADMIN: &str = "a-51d0be77c4";

/// A table and an engine over it, in a temporary directory.
fn engine() -> (tempfile::TempDir, Arc<Engine>, Model) {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = random_table(dir.path(), "t", DType::U8, 32, 500, 4096, 3);
    let mut c = EngineConfig::new(dir.path());
    c.ram_cache_bytes = 64 << 10;
    c.max_batch_ids = 10_000;
    let engine = Arc::new(Engine::open(c).expect("open engine"));
    (dir, engine, model)
}

fn tokens() -> Arc<TokenSet> {
    Arc::new(
        TokenSet::parse(&format!("# test tokens\nread:{READ}\nadmin:{ADMIN}\n")).expect("tokens"),
    )
}

async fn serve(engine: Arc<Engine>, edge: EdgeOptions) -> RunningServer {
    spawn_server_with(
        engine,
        ListenAddr::Tcp("127.0.0.1:0".parse().expect("addr")),
        ServerOptions {
            edge,
            local_socket: Some(common::local_socket_path()),
            ..ServerOptions::default()
        },
    )
    .await
    .expect("start server")
}

async fn client(server: &RunningServer, token: Option<&str>) -> Client {
    let mut b = Client::builder(format!("http://{}", server.addr)).retries(0);
    if let Some(t) = token {
        b = b.token(t);
    }
    b.connect().await.expect("connect")
}

fn code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> Code {
    match r {
        Ok(_) => Code::Ok,
        Err(e) => e.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_token_case_gets_its_status() {
    let (_dir, engine, model) = engine();
    let server = serve(
        engine,
        EdgeOptions {
            tokens: Some(tokens()),
            ..Default::default()
        },
    )
    .await;

    // No token, and a wrong one (also one a byte short, and one a byte long): UNAUTHENTICATED on
    // every RPC, read or admin.
    for token in [
        None,
        Some("nope"),
        Some(&READ[..READ.len() - 1]),
        Some("r-7f3a9c21e00"),
    ] {
        let c = client(&server, token).await;
        let e = c.lookup("t", &[1]).await.expect_err("no access");
        assert!(
            matches!(e, ClientError::Unauthenticated(_)),
            "{token:?}: {e}"
        );
        assert_eq!(code(c.list_tables().await), Code::Unauthenticated);
        assert_eq!(code(c.stats(false).await), Code::Unauthenticated);
        assert_eq!(code(c.prefetch("t", &[1]).await), Code::Unauthenticated);
        assert_eq!(
            code(
                c.raw()
                    .register_region(shm_path("/dev/shm/x"))
                    .await
                    .map_err(ClientError::from)
            ),
            Code::Unauthenticated
        );
    }

    // A read token: every read RPC works...
    let reader = client(&server, Some(READ)).await;
    let rows = reader.lookup("t", &[4, 499, 4]).await.expect("read lookup");
    for (i, id) in [4u64, 499, 4].into_iter().enumerate() {
        assert_eq!(rows.row(i), model.row(id));
    }
    assert_eq!(reader.list_tables().await.expect("list")[0].name, "t");
    assert_eq!(
        reader.describe_table("t").await.expect("describe").rows,
        500
    );
    assert!(reader.stats(false).await.expect("stats").requests >= 1);
    let streamed: Vec<_> = futures::StreamExt::collect(
        reader
            .lookup_stream("t", futures::stream::iter(vec![vec![7u64], vec![8]]))
            .await
            .expect("stream"),
    )
    .await;
    assert_eq!(streamed.len(), 2);
    assert_eq!(
        streamed[1].as_ref().expect("streamed rows").row(0),
        model.row(8)
    );
    // No group "g": past the token check, the engine's NOT_FOUND.
    let e = reader
        .lookup_ngrams("g", 1, &[engram_store_client::token_sequence(&[1, 2], &[])])
        .await
        .expect_err("no such group");
    assert_eq!(e.code(), Code::NotFound, "{e}");

    // ...and every admin RPC is PERMISSION_DENIED, naming the RPC.
    let e = reader.prefetch("t", &[1]).await.expect_err("prefetch");
    assert!(
        matches!(&e, ClientError::PermissionDenied(m) if m.contains("Prefetch")),
        "{e}"
    );
    assert_eq!(
        code(
            reader
                .raw()
                .register_region(shm_path("/dev/shm/x"))
                .await
                .map_err(ClientError::from)
        ),
        Code::PermissionDenied
    );
    let e = reader
        .shm_region(64)
        .await
        .expect_err("a read token registers no memfd");
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert_eq!(
        code(reader.unregister_region(1, "x").await),
        Code::PermissionDenied
    );
    assert_eq!(
        code(reader.lookup_into(1, "x", 0, "t", &[1]).await),
        Code::PermissionDenied
    );

    // An admin token: reads and admin RPCs alike.
    let admin = client(&server, Some(ADMIN)).await;
    assert_eq!(
        admin.lookup("t", &[9]).await.expect("admin lookup").row(0),
        model.row(9)
    );
    assert_eq!(admin.prefetch("t", &[1, 2, 3]).await.expect("prefetch"), 3);
    // A region by path: past the token check, the engine's refusal (paths are never opened).
    let e = admin
        .raw()
        .register_region(shm_path("/etc/passwd"))
        .await
        .expect_err("paths are refused");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    // A memfd region on the local socket, with the admin token.
    let region = admin.shm_region(96).await.expect("register");
    let written = admin
        .lookup_into(region.id(), region.token(), 0, "t", &[5, 6, 7])
        .await
        .expect("lookup_into");
    assert_eq!(written, 96);
    assert_eq!(&region.as_slice()[32..64], model.row(6));
    region.unregister().expect("unregister");
    // Without a token, the local socket refuses too.
    let stranger = client(&server, None).await;
    let e = stranger.shm_region(64).await.expect_err("no token");
    assert!(matches!(e.code(), Code::Unauthenticated), "{e}");

    // Health and reflection need no token.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("channel");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health without a token")
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(channel);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut answers = reflection
        .server_reflection_info(futures::stream::iter(vec![request]))
        .await
        .expect("reflection without a token")
        .into_inner();
    let answer = answers
        .message()
        .await
        .expect("answer")
        .expect("one answer");
    assert!(format!("{answer:?}").contains("engram_store.v1.EmbeddingStore"));

    // A raw call without the client's interceptor, token in the metadata by hand.
    let mut raw = pb::embedding_store_client::EmbeddingStoreClient::connect(format!(
        "http://{}",
        server.addr
    ))
    .await
    .expect("raw");
    let mut req = tonic::Request::new(pb::ListTablesRequest {});
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {READ}").parse().expect("value"),
    );
    raw.list_tables(req).await.expect("raw call with a token");
    let mut req = tonic::Request::new(pb::ListTablesRequest {});
    req.metadata_mut()
        .insert("authorization", READ.parse().expect("value"));
    assert_eq!(
        raw.list_tables(req)
            .await
            .expect_err("no Bearer scheme")
            .code(),
        Code::Unauthenticated
    );
    server.shutdown().await.expect("shutdown");
}

/// Connects and looks one row up: Ok only if both worked.
async fn tls_lookup(
    server: &RunningServer,
    ca: &str,
    identity: Option<(&str, &str)>,
    token: Option<&str>,
) -> Result<Vec<u8>, ClientError> {
    let mut b = Client::builder(format!("https://localhost:{}", server.addr.port()))
        .retries(0)
        .tls_ca_pem(ca.as_bytes());
    if let Some((cert, key)) = identity {
        b = b.tls_identity_pem(cert.as_bytes(), key.as_bytes());
    }
    if let Some(t) = token {
        b = b.token(t);
    }
    let c = b.connect().await?;
    Ok(c.lookup("t", &[11]).await?.row(0).to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mutual_tls() {
    let (dir, engine, model) = engine();
    let good = pki("engram test CA");
    let other = pki("some other CA");

    // TLS: a client trusting the CA is served; plaintext and a client trusting another CA fail.
    let server = serve(
        engine.clone(),
        EdgeOptions {
            tls: Some(tls_files(dir.path(), &good, None)),
            ..Default::default()
        },
    )
    .await;
    let row = tls_lookup(&server, &good.ca, None, None)
        .await
        .expect("TLS lookup");
    assert_eq!(row, model.row(11));
    let plain = Client::builder(format!("http://127.0.0.1:{}", server.addr.port()))
        .retries(0)
        .connect()
        .await;
    let plain = match plain {
        Ok(c) => c.lookup("t", &[11]).await.map(|_| ()),
        Err(e) => Err(e),
    };
    println!("plaintext: {:?}", plain.as_ref().err());
    assert!(plain.is_err(), "plaintext to a TLS server");
    let e = tls_lookup(&server, &other.ca, None, None)
        .await
        .expect_err("a server certificate from an unknown CA");
    println!("unknown server CA: {e}");
    server.shutdown().await.expect("shutdown");

    // Mutual TLS with tokens: only a client with a certificate from the client CA, and a token.
    let server = serve(
        engine,
        EdgeOptions {
            tls: Some(tls_files(dir.path(), &good, Some(&good.ca))),
            tokens: Some(tokens()),
            ..Default::default()
        },
    )
    .await;
    let me = Some((good.client_cert.as_str(), good.client_key.as_str()));
    let row = tls_lookup(&server, &good.ca, me, Some(READ))
        .await
        .expect("mutual TLS lookup");
    assert_eq!(row, model.row(11));
    let e = tls_lookup(&server, &good.ca, None, Some(READ))
        .await
        .expect_err("no client certificate");
    println!("no client certificate: {e}");
    let stranger = Some((other.client_cert.as_str(), other.client_key.as_str()));
    let e = tls_lookup(&server, &good.ca, stranger, Some(READ))
        .await
        .expect_err("a client certificate from another CA");
    println!("client certificate from another CA: {e}");
    let e = tls_lookup(&server, &good.ca, me, None)
        .await
        .expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    server.shutdown().await.expect("shutdown");

    // Half a TLS configuration is refused before anything listens.
    assert!(TlsFiles::from_flags(Some("c".into()), None, None).is_err());
    assert!(TlsFiles::from_flags(None, None, Some("ca".into())).is_err());
    assert!(
        TlsFiles::from_flags(None, None, None)
            .expect("off")
            .is_none()
    );
}

/// A RegisterRegion of a path (the form the server always refuses).
fn shm_path(path: &str) -> pb::RegisterRegionRequest {
    pb::RegisterRegionRequest {
        kind: Some(pb::register_region_request::Kind::Shm(
            pb::SharedMemoryRegion {
                path: path.into(),
                size: 8,
            },
        )),
    }
}
