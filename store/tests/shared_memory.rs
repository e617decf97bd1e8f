//! `LookupInto` with host shared memory (a sealed memfd handed over on the local socket) over
//! real gRPC: rows land at the asked offset exactly as `Lookup` returns them, writes outside the
//! region or with a wrong token are refused, regions named by path are refused without a word
//! about the path, and an unregistered region, or one whose connection closed, is gone.

mod common;

use common::{random_table, start};
use engram_store::table::DType;
use engram_store_cache::io::IoEngineKind;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_into_shared_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = random_table(dir.path(), "t", DType::Bf16, 80, 5000, 4096, 8);
    let (engine, server, client) = start(dir.path(), 256 << 10, IoEngineKind::Auto).await;

    let size = 64 * 1024;
    let mut region = client.shm_region(size).await.expect("register");
    region.as_mut_slice().fill(0xAA);
    let (id, token) = (region.id(), region.token().to_owned());

    let ids = [4999u64, 0, 17, 17, 2500];
    let written = client
        .lookup_into(id, &token, 1000, "t", &ids)
        .await
        .expect("lookup_into");
    assert_eq!(written, 5 * 160);
    let bytes = region.as_slice();
    assert!(
        bytes[..1000].iter().all(|&b| b == 0xAA),
        "bytes before the offset untouched"
    );
    for (i, &r) in ids.iter().enumerate() {
        assert_eq!(
            &bytes[1000 + i * 160..1000 + (i + 1) * 160],
            model.row(r),
            "row {r}"
        );
    }
    assert!(
        bytes[1800..].iter().all(|&b| b == 0xAA),
        "bytes after the rows untouched"
    );

    // Past the end: 410 rows of 160 B at offset 0 is 65,600 bytes > 65,536.
    let many: Vec<u64> = (0..410).collect();
    let e = client
        .lookup_into(id, &token, 0, "t", &many)
        .await
        .expect_err("past the end");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.to_string().contains("65536"), "{e}");
    let e = client
        .lookup_into(id, "not-the-token", 0, "t", &[1])
        .await
        .expect_err("bad token");
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = client
        .lookup_into(id, &token, 0, "t", &[5000])
        .await
        .expect_err("bad id");
    assert_eq!(e.code(), Code::OutOfRange);

    // A path is never opened on a client's behalf, and the answer says nothing about it.
    for path in ["/etc/passwd", "/dev/shm/nothing-here"] {
        let req = engram_store_client::proto::RegisterRegionRequest {
            kind: Some(
                engram_store_client::proto::register_region_request::Kind::Shm(
                    engram_store_client::proto::SharedMemoryRegion {
                        path: path.into(),
                        size: 10,
                    },
                ),
            ),
        };
        let e = client
            .raw()
            .register_region(req)
            .await
            .expect_err("paths are refused");
        assert_eq!(e.code(), Code::FailedPrecondition, "{path}: {e}");
        assert!(
            !e.message().contains(path),
            "the answer must not echo the path: {e}"
        );
    }

    region.unregister().expect("unregister");
    let e = client
        .lookup_into(id, &token, 0, "t", &[1])
        .await
        .expect_err("gone");
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(engine.stats(false).regions, 0);
    server.shutdown().await.expect("shutdown");
}

/// A region belongs to the local-socket connection that registered it: dropping the region
/// (closing that connection) releases it on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_goes_with_its_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    random_table(dir.path(), "t", DType::U8, 16, 100, 4096, 1);
    let (engine, server, client) = start(dir.path(), 0, IoEngineKind::Pread).await;
    let region = client.shm_region(4096).await.expect("register");
    let (id, token) = (region.id(), region.token().to_owned());
    assert_eq!(engine.stats(false).regions, 1);
    drop(region);
    for _ in 0..100 {
        if engine.stats(false).regions == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        engine.stats(false).regions,
        0,
        "released when the connection closed"
    );
    let e = client
        .lookup_into(id, &token, 0, "t", &[1])
        .await
        .expect_err("gone");
    assert_eq!(e.code(), Code::NotFound);
    server.shutdown().await.expect("shutdown");
}
