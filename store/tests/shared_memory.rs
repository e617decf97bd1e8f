//! `LookupInto` with host shared memory over real gRPC: rows land at the asked offset exactly as
//! `Lookup` returns them, writes outside the region or with a wrong token are refused, paths
//! outside /dev/shm are refused, and an unregistered region is gone.

mod common;

use common::{random_table, start};
use engram_store::table::DType;
use engram_store_cache::io::IoEngineKind;
use tonic::Code;

struct ShmFile(std::path::PathBuf);

impl Drop for ShmFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_into_shared_memory() {
    if !std::path::Path::new("/dev/shm").is_dir() {
        println!("SKIP: no /dev/shm on this machine");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let model = random_table(dir.path(), "t", DType::Bf16, 80, 5000, 4096, 8);
    let (_engine, server, client) = start(dir.path(), 256 << 10, IoEngineKind::Auto).await;

    let shm = ShmFile(std::path::PathBuf::from(format!(
        "/dev/shm/engram-test-{}",
        std::process::id()
    )));
    let size = 64 * 1024u64;
    std::fs::write(&shm.0, vec![0xAAu8; size as usize]).expect("create shm file");
    let (id, token) = client
        .register_shm_region(&shm.0.to_string_lossy(), size)
        .await
        .expect("register");

    let ids = [4999u64, 0, 17, 17, 2500];
    let written = client
        .lookup_into(id, &token, 1000, "t", &ids)
        .await
        .expect("lookup_into");
    assert_eq!(written, 5 * 160);
    let bytes = std::fs::read(&shm.0).expect("read shm");
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

    let e = client
        .register_shm_region("/etc/passwd", 10)
        .await
        .expect_err("outside /dev/shm");
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = client
        .register_shm_region(&shm.0.to_string_lossy(), size * 2)
        .await
        .expect_err("too big");
    assert!(e.to_string().contains("smaller"), "{e}");

    client
        .unregister_region(id, &token)
        .await
        .expect("unregister");
    let e = client
        .lookup_into(id, &token, 0, "t", &[1])
        .await
        .expect_err("gone");
    assert_eq!(e.code(), Code::NotFound);
    server.shutdown().await.expect("shutdown");
}
