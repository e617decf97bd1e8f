//! `ShareTable` over real gRPC: with `--share-memory`, a table held whole in RAM is loaded whole
//! and shared as one file in which a second reader (this test, as a worker would) finds every
//! row at `id * row_bytes`, byte for byte as `Lookup` returns it (also through the client's
//! `MappedRows`); the file is owner read-only.
//! Refusals name what is missing: no shared memory, a table that does
//! not fit the RAM budget, an unknown table, a device with no VRAM tier.

mod common;

use common::{random_table, start_with};
use engram_store::engine::EngineConfig;
use engram_store::table::DType;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_held_whole_is_shared_as_one_file_of_every_row() {
    let data = tempfile::tempdir().expect("tempdir");
    let shm = tempfile::tempdir().expect("tempdir");
    let small = random_table(data.path(), "small", DType::Bf16, 80, 5000, 4096, 3);
    let mut c = EngineConfig::new(data.path());
    c.ram_cache_bytes = 4 << 20;
    c.share_memory_dir = Some(shm.path().to_path_buf());
    c.max_batch_ids = 10_000;
    let (engine, server, client) = start_with(c).await;

    let shared = client.share_table("small", None).await.expect("share");
    assert_eq!(shared.table, "small");
    assert_eq!(shared.rows, 5000);
    assert_eq!(shared.row_bytes, 160);
    assert!(shared.vram.is_none(), "no VRAM tier in this server");
    let path = std::path::PathBuf::from(&shared.host_path);
    assert!(path.starts_with(shm.path()), "{}", path.display());
    let meta = std::fs::metadata(&path).expect("the shared file exists");
    assert_eq!(meta.len(), shared.host_bytes);
    assert!(shared.host_bytes >= 5000 * 160);
    let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
    assert_eq!(mode & 0o777, 0o400, "owner read-only");
    // Nothing was looked up before: ShareTable loaded every row itself.
    let bytes = std::fs::read(&path).expect("read the shared file");
    for id in [0u64, 1, 2499, 4998, 4999] {
        let at = id as usize * 160;
        assert_eq!(&bytes[at..at + 160], small.row(id), "row {id} in the file");
    }
    assert_eq!(
        &bytes[..5000 * 160],
        &small.bytes[..],
        "every row in row order"
    );
    let looked_up = client.lookup("small", &[4999, 7]).await.expect("lookup");
    assert_eq!(looked_up.row(0), small.row(4999));

    // The client's own mapping of it: rows copied with no request.
    let mapped = engram_store_client::MappedRows::open(&client, "small")
        .await
        .expect("map");
    assert_eq!((mapped.rows(), mapped.row_bytes()), (5000, 160));
    assert_eq!(mapped.row(4999), Some(small.row(4999)));
    assert_eq!(mapped.row(5000), None);
    let ids = [3u64, 4999, 3, 0];
    let mut out = vec![0u8; ids.len() * 160];
    mapped.gather_into(&ids, &mut out).expect("gather");
    for (k, &id) in ids.iter().enumerate() {
        assert_eq!(&out[k * 160..(k + 1) * 160], small.row(id), "row {id}");
    }
    let e = mapped
        .gather_into(&[1, 5000], &mut vec![0u8; 320])
        .expect_err("past the end");
    assert!(e.to_string().contains("5000"), "{e}");

    let e = client.share_table("nope", None).await.expect_err("unknown");
    assert_eq!(e.code(), Code::NotFound, "{e}");
    let e = client
        .share_table("small", Some(3))
        .await
        .expect_err("device");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.to_string().contains("GPU 3"), "{e}");
    drop((engine, server));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_not_held_whole_or_without_share_memory_is_not_shared() {
    let data = tempfile::tempdir().expect("tempdir");
    let shm = tempfile::tempdir().expect("tempdir");
    let _t = random_table(data.path(), "t", DType::Bf16, 80, 200_000, 4096, 5);
    // 32 MB of rows, 4 MiB of RAM: cached, not held whole.
    let mut c = EngineConfig::new(data.path());
    c.ram_cache_bytes = 4 << 20;
    c.share_memory_dir = Some(shm.path().to_path_buf());
    let (_engine, _server, client) = start_with(c).await;
    let e = client.share_table("t", None).await.expect_err("not whole");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.to_string().contains("RAM budget that holds"), "{e}");
    assert_eq!(std::fs::read_dir(shm.path()).expect("dir").count(), 0);

    let mut c = EngineConfig::new(data.path());
    c.ram_cache_bytes = 64 << 20;
    let (_engine, _server, client) = start_with(c).await;
    let e = client.share_table("t", None).await.expect_err("not shared");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.to_string().contains("--share-memory"), "{e}");
}
