//! Getting tables in and versions out: `.npy` and `.safetensors` ingestion checked row by row
//! through a real server, bad inputs refused with clear errors, the newest complete version
//! served, and a crashed write (a leftover `.tmp-*` directory) ignored.

mod common;

use std::io::Write;

use common::start;
use engram_store::ingest::{SynthSpec, WriteOptions, ingest_file, synth_table};
use engram_store::table::{DType, synth_row};
use engram_store_cache::io::IoEngineKind;

fn write_npy(path: &std::path::Path, descr: &str, rows: usize, cols: usize, data: &[u8]) {
    let dict =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let mut header = dict.into_bytes();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(b' ');
    }
    header.push(b'\n');
    let mut f = std::fs::File::create(path).expect("create npy");
    f.write_all(b"\x93NUMPY\x01\x00").expect("write");
    f.write_all(&(header.len() as u16).to_le_bytes())
        .expect("write");
    f.write_all(&header).expect("write");
    f.write_all(data).expect("write");
}

fn write_safetensors(path: &std::path::Path, tensors: &[(&str, &str, usize, usize, &[u8])]) {
    let mut json = String::from("{\"__metadata__\":{\"format\":\"pt\"}");
    let mut offset = 0;
    for (name, dtype, r, c, data) in tensors {
        json.push_str(&format!(
            ",\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":[{r},{c}],\"data_offsets\":[{offset},{}]}}",
            offset + data.len()
        ));
        offset += data.len();
    }
    json.push('}');
    let mut f = std::fs::File::create(path).expect("create safetensors");
    f.write_all(&(json.len() as u64).to_le_bytes())
        .expect("write");
    f.write_all(json.as_bytes()).expect("write");
    for (_, _, _, _, data) in tensors {
        f.write_all(data).expect("write");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npy_and_safetensors_ingest_row_for_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let f32_rows: Vec<u8> = (0..300 * 7)
        .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
        .collect();
    let npy = dir.path().join("w.npy");
    write_npy(&npy, "<f4", 300, 7, &f32_rows);
    let m = ingest_file(&npy, "fromnpy", &data, None, &WriteOptions::default(), None)
        .expect("ingest npy");
    assert_eq!((m.rows, m.row_dim, m.dtype), (300, 7, DType::F32));

    let bf16: Vec<u8> = (0..1000u32 * 80)
        .flat_map(|i| (i as u16).to_le_bytes())
        .collect();
    let other: Vec<u8> = vec![1u8; 16];
    let st = dir.path().join("w.safetensors");
    write_safetensors(
        &st,
        &[
            ("other", "U8", 4, 4, &other),
            ("engram", "BF16", 1000, 80, &bf16),
        ],
    );
    let err = ingest_file(&st, "x", &data, None, &WriteOptions::default(), None)
        .expect_err("two tensors");
    assert!(err.to_string().contains("--tensor"), "{err}");
    let err = ingest_file(
        &st,
        "x",
        &data,
        Some("nope"),
        &WriteOptions::default(),
        None,
    )
    .expect_err("no such tensor");
    assert!(err.to_string().contains("engram"), "{err}");
    let m = ingest_file(
        &st,
        "fromst",
        &data,
        Some("engram"),
        &WriteOptions::default(),
        None,
    )
    .expect("ingest st");
    assert_eq!((m.rows, m.row_dim, m.dtype), (1000, 80, DType::Bf16));

    let (_e, server, client) = start(&data, 0, IoEngineKind::Auto).await;
    let ids: Vec<u64> = vec![0, 299, 150, 150, 7];
    let rows = client.lookup("fromnpy", &ids).await.expect("lookup npy");
    for (i, &id) in ids.iter().enumerate() {
        let at = id as usize * 28;
        assert_eq!(rows.row(i), &f32_rows[at..at + 28]);
    }
    let ids: Vec<u64> = vec![999, 0, 500];
    let rows = client.lookup("fromst", &ids).await.expect("lookup st");
    for (i, &id) in ids.iter().enumerate() {
        let at = id as usize * 160;
        assert_eq!(rows.row(i), &bf16[at..at + 160]);
    }
    server.shutdown().await.expect("shutdown");
}

#[test]
fn bad_inputs_are_refused_with_reasons() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let p = dir.path().join("short.npy");
    write_npy(&p, "<f4", 100, 4, &[0u8; 40]); // claims 1600 bytes
    let e =
        ingest_file(&p, "t", &data, None, &WriteOptions::default(), None).expect_err("truncated");
    assert!(e.to_string().contains("needs 1600 bytes"), "{e}");
    let p = dir.path().join("f64.npy");
    write_npy(&p, "<f8", 1, 1, &[0u8; 8]);
    let e = ingest_file(&p, "t", &data, None, &WriteOptions::default(), None).expect_err("f64");
    assert!(e.to_string().contains("not supported"), "{e}");
    let p = dir.path().join("junk.bin");
    std::fs::write(&p, b"hello world, not a tensor file").expect("write");
    assert!(ingest_file(&p, "t", &data, None, &WriteOptions::default(), None).is_err());
    let e = ingest_file(
        &dir.path().join("missing.npy"),
        "t",
        &data,
        None,
        &WriteOptions::default(),
        None,
    )
    .expect_err("missing");
    assert!(e.to_string().contains("missing.npy"), "{e}");
    // Nothing half-written is left behind.
    assert!(
        !data.join("t").exists() || std::fs::read_dir(data.join("t")).expect("dir").count() == 0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_complete_version_is_served_and_crashed_writes_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = |seed| SynthSpec {
        name: "t".into(),
        rows: 500,
        row_dim: 16,
        dtype: DType::Bf16,
        seed,
    };
    let m1 = synth_table(dir.path(), &spec(1), &WriteOptions::default(), None).expect("v1");
    let m2 = synth_table(dir.path(), &spec(2), &WriteOptions::default(), None).expect("v2");
    assert_eq!((m1.version, m2.version), (1, 2));
    // A crashed writer of version 3: data but no rename.
    let crashed = dir.path().join("t").join(".tmp-v00000003-99999");
    std::fs::create_dir_all(&crashed).expect("mkdir");
    std::fs::write(crashed.join("data-00000.bin"), vec![0u8; 8192]).expect("write");
    // A version directory without a manifest is not complete either.
    std::fs::create_dir_all(dir.path().join("t").join("v00000004")).expect("mkdir");

    let (_e, server, client) = start(dir.path(), 0, IoEngineKind::Auto).await;
    let info = client.describe_table("t").await.expect("describe");
    assert_eq!(info.version, 2);
    let rows = client.lookup("t", &[0, 499]).await.expect("lookup");
    assert_eq!(rows.row(0), synth_row(2, DType::Bf16, 16, 0).as_slice());
    assert_eq!(rows.row(1), synth_row(2, DType::Bf16, 16, 499).as_slice());
    server.shutdown().await.expect("shutdown");

    // The next write cleans the crashed temporary directory up.
    synth_table(dir.path(), &spec(3), &WriteOptions::default(), None).expect("v3");
    assert!(!crashed.exists());
}
