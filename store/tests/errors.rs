//! Every error a lookup can meet, over real gRPC: each with its status code and a message naming
//! the bad value, and none of them hurting the requests around it. A flipped byte in a data file
//! makes that block DATA_LOSS and nothing else. `ReadTableFile` streams left unread hold their
//! chunks within the answer budget (RESOURCE_EXHAUSTED beyond it).

mod common;

use common::{random_table, start};
use engram_store::table::{DATA_MAGIC, data_file_name, version_dir_name};
use engram_store_cache::io::IoEngineKind;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_precise_statuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = random_table(
        dir.path(),
        "t",
        engram_store::table::DType::Bf16,
        80,
        1000,
        4096,
        1,
    );
    let (_engine, server, client) = start(dir.path(), 64 << 10, IoEngineKind::Auto).await;

    let e = client
        .lookup("nope", &[1])
        .await
        .expect_err("unknown table");
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.to_string().contains("\"nope\""), "{e}");

    let e = client
        .lookup("t", &[3, 999, 1000, 5000])
        .await
        .expect_err("out of range");
    assert_eq!(e.code(), Code::OutOfRange);
    let msg = e.to_string();
    assert!(
        msg.contains("1000") && msg.contains("position 2") && msg.contains("has 1000 rows"),
        "{msg}"
    );

    // Over the server's limit of 10,000 ids, sent raw so the client does not split it.
    let mut raw = client.raw();
    let status = raw
        .lookup(engram_store_proto::v1::LookupRequest {
            table: "t".into(),
            ids: vec![0; 10_001],
            ..Default::default()
        })
        .await
        .expect_err("too many ids");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("10001") && status.message().contains("10000"),
        "{}",
        status.message()
    );

    // Ids as packed little-endian bytes: the same rows as `ids`; a ragged byte count, both
    // forms at once, or too many ids are each INVALID_ARGUMENT.
    let packed =
        |ids: &[u64]| -> bytes::Bytes { ids.iter().flat_map(|id| id.to_le_bytes()).collect() };
    let rows = raw
        .lookup(engram_store_proto::v1::LookupRequest {
            table: "t".into(),
            ids_le: packed(&[7, 999, 7]),
            ..Default::default()
        })
        .await
        .expect("lookup by ids_le")
        .into_inner();
    assert_eq!(rows.row_count, 3);
    let rb = rows.row_bytes as usize;
    for (i, id) in [7u64, 999, 7].into_iter().enumerate() {
        assert_eq!(&rows.rows[i * rb..(i + 1) * rb], model.row(id), "row {id}");
    }
    for (ids, ids_le, what) in [
        (vec![], packed(&[1, 2]).slice(..15), "8-byte"),
        (vec![1], packed(&[2]), "not both"),
        (vec![], packed(&[0; 10_001]), "10001"),
    ] {
        let status = raw
            .lookup(engram_store_proto::v1::LookupRequest {
                table: "t".into(),
                ids,
                ids_le,
                version: None,
            })
            .await
            .expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}");
        assert!(status.message().contains(what), "{}", status.message());
    }

    let e = client
        .describe_table("nope")
        .await
        .expect_err("describe unknown");
    assert_eq!(e.code(), Code::NotFound);

    // The server is unharmed.
    let rows = client
        .lookup("t", &[0, 999])
        .await
        .expect("good lookup after bad ones");
    assert_eq!(rows.row(0), model.row(0));
    assert_eq!(rows.row(1), model.row(999));
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_is_data_loss_for_that_block_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 160-byte rows: 25 per 4 KiB block. Corrupt block 3 = rows 75..100.
    let model = random_table(
        dir.path(),
        "t",
        engram_store::table::DType::Bf16,
        80,
        1000,
        4096,
        2,
    );
    let path = dir
        .path()
        .join("t")
        .join(version_dir_name(1))
        .join(data_file_name(0));
    let mut bytes = std::fs::read(&path).expect("read data file");
    assert_eq!(&bytes[..8], &DATA_MAGIC);
    let at = 4096 * (1 + 3) + 1234; // header block, then data block 3
    bytes[at] ^= 0x40;
    std::fs::write(&path, bytes).expect("write corrupted file");

    for io in [IoEngineKind::Pread, IoEngineKind::Auto] {
        let (_engine, server, client) = start(dir.path(), 64 << 10, io).await;
        let e = client
            .lookup("t", &[10, 80])
            .await
            .expect_err("corrupt block");
        assert_eq!(e.code(), Code::DataLoss);
        let msg = e.to_string();
        assert!(msg.contains("block 3") && msg.contains("\"t\""), "{msg}");
        // Every other block is served, before and after, and the corrupt one stays refused.
        let ids: Vec<u64> = (0..1000).filter(|r| !(75..100).contains(r)).collect();
        let rows = client.lookup("t", &ids).await.expect("other blocks");
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(rows.row(i), model.row(id));
        }
        let e = client.lookup("t", &[99]).await.expect_err("still corrupt");
        assert_eq!(e.code(), Code::DataLoss);
        let stats = client.stats(false).await.expect("stats");
        let nvme = stats
            .tiers
            .iter()
            .find(|t| t.tier == "nvme")
            .expect("nvme tier");
        assert!(nvme.checksum_errors >= 2);
        server.shutdown().await.expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    random_table(
        dir.path(),
        "t",
        engram_store::table::DType::U8,
        8,
        10,
        4096,
        3,
    );
    let (_engine, server, _client) = start(dir.path(), 0, IoEngineKind::Auto).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let r = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "engram_store.v1.EmbeddingStore".into(),
        })
        .await
        .expect("health check");
    assert_eq!(
        r.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut refl = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl
        .server_reflection_info(futures::stream::iter(vec![req]))
        .await
        .expect("reflection")
        .into_inner();
    let msg = stream
        .message()
        .await
        .expect("reflection answer")
        .expect("one message");
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("unexpected reflection answer {msg:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.iter().any(|n| n == "engram_store.v1.EmbeddingStore"),
        "{names:?}"
    );
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_streams_that_are_not_read_stay_within_the_answer_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 40,000 rows of 512 B: a data file of ~20 MB, many chunks.
    random_table(
        dir.path(),
        "t",
        engram_store::table::DType::U8,
        512,
        40_000,
        4096,
        1,
    );
    let mut c = engram_store::engine::EngineConfig::new(dir.path());
    c.answer_budget_bytes = 8 << 20;
    c.answer_wait = std::time::Duration::from_millis(50);
    let (_engine, server, client) = common::start_with(c).await;
    let read = || engram_store_proto::v1::ReadTableFileRequest {
        table: "t".into(),
        version: 1,
        file: "data-00000.bin".into(),
        ..Default::default()
    };
    // Streams opened and never read: each holds 3 MiB of the budget's 7.5 MiB large pool.
    let mut raw = client.raw();
    let first = raw.read_table_file(read()).await.expect("first stream");
    let second = raw.read_table_file(read()).await.expect("second stream");
    let third = raw
        .read_table_file(read())
        .await
        .expect_err("the budget is spent");
    assert_eq!(third.code(), tonic::Code::ResourceExhausted, "{third:?}");
    // Ordinary lookups still get through (the small answers' pool), and a stream read to the
    // end gives its room back.
    client
        .lookup("t", &[1, 2, 3])
        .await
        .expect("a lookup beside the streams");
    drop(first);
    let mut stream = second.into_inner();
    let mut bytes = 0;
    while let Some(chunk) = stream.message().await.expect("chunk") {
        bytes += chunk.data.len() as u64;
    }
    assert!(bytes > 16 << 20, "{bytes} bytes");
    drop(stream);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    raw.read_table_file(read()).await.expect("room again");
    server.shutdown().await.expect("shutdown");
}
