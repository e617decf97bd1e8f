//! Engram n-gram lookups over real gRPC: a small group made by `engram create --synth` (and one
//! from a safetensors file) on a custom layout with ~1000-row heads; LookupNgrams must equal
//! hashing locally plus plain Lookups, continued sequences must equal whole ones, errors must
//! name what is wrong, and a prefetch must make the following lookup hit the RAM tier.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use engram_store::group::{GroupError, GroupSource, create_group};
use engram_store::ingest::WriteOptions;
use engram_store::table::DType;
use engram_store_cache::io::IoEngineKind;
use engram_store_client::{ClientError, proto as pb, token_sequence};
use engram_store_hashing::{CompressionMap, LayerHasher, Layout};
use rand::{Rng, SeedableRng};

/// Raw ids the test compression map covers.
const RAW_VOCAB: u32 = 1500;
/// The layout's compressed vocabulary.
const VOCAB: u32 = 500;
const LAYERS: [u32; 2] = [1, 3];

/// Writes the layout and the compression map (raw r -> r * 7919 mod 500) into `dir`.
fn write_inputs(dir: &Path) -> (PathBuf, PathBuf) {
    common::write_small_group_inputs(dir, RAW_VOCAB, VOCAB)
}

/// Creates group `g` with synthetic bf16 rows through the command line, and a plain table.
async fn synth_group(inputs: &Path, data: &Path) {
    let (layout, map) = write_inputs(inputs);
    let args = [
        "engram-store",
        "engram",
        "create",
        "--name",
        "g",
        "--layout",
        layout.to_str().expect("utf-8 path"),
        "--compress",
        map.to_str().expect("utf-8 path"),
        "--data",
        data.to_str().expect("utf-8 path"),
        "--synth",
        "--dtype",
        "bf16",
        "--seed",
        "5",
    ];
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_engram-store"))
        .args(&args[1..])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run engram-store");
    assert!(status.success(), "engram create: {status}");
    common::random_table(data, "plain", DType::F32, 4, 100, 4096, 1);
}

/// The row ids of `sequences` computed locally (map + hasher), concatenated.
fn local_row_ids(layer_id: u32, sequences: &[pb::TokenSequence]) -> Vec<u64> {
    let layout = Layout::from_json_str(common::SMALL_LAYOUT).expect("layout");
    let ids: Vec<u32> = (0..RAW_VOCAB).map(|r| r * 7919 % VOCAB).collect();
    let map = CompressionMap::from_ids(ids);
    let hasher = LayerHasher::new(&layout, layer_id).expect("hasher");
    let (mut tokens, mut context, mut rows, mut all) = (vec![], vec![], vec![], vec![]);
    for s in sequences {
        map.compress_into(&s.tokens, &mut tokens).expect("compress");
        map.compress_into(&s.context, &mut context)
            .expect("compress");
        hasher
            .row_ids_into(&tokens, &context, &mut rows)
            .expect("row ids");
        all.extend_from_slice(&rows);
    }
    all
}

fn random_sequence(rng: &mut impl Rng, len: usize) -> Vec<u32> {
    (0..len).map(|_| rng.random_range(0..RAW_VOCAB)).collect()
}

#[tokio::test]
async fn ngram_rows_equal_local_hashing_plus_plain_lookups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    synth_group(dir.path(), &data).await;
    for ram in [0, 4 << 20] {
        let (engine, server, client) = common::start(&data, ram, IoEngineKind::Pread).await;
        assert_eq!(engine.groups().count(), 1);
        let names: Vec<String> = client
            .list_tables()
            .await
            .expect("list")
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["g.layer1", "g.layer3", "plain"]);
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut repeated = random_sequence(&mut rng, 6);
        repeated.extend_from_within(..); // the same n-grams twice: duplicates in the batch
        let sequences: Vec<pb::TokenSequence> = [
            random_sequence(&mut rng, 1),
            vec![],
            random_sequence(&mut rng, 2),
            repeated,
            random_sequence(&mut rng, 57),
        ]
        .iter()
        .map(|t| token_sequence(t, &[]))
        .collect();
        for layer in LAYERS {
            let table = format!("g.layer{layer}");
            let ids = local_row_ids(layer, &sequences);
            assert_eq!(ids.len(), (1 + 2 + 12 + 57) * 8);
            // Twice: the second time (partly) from the RAM tier.
            for _ in 0..2 {
                let rows = client
                    .lookup_ngrams("g", layer, &sequences)
                    .await
                    .expect("lookup_ngrams");
                assert_eq!(rows.len(), ids.len());
                assert_eq!((rows.row_dim(), rows.row_bytes()), (8, 16));
                assert_eq!(rows.dtype(), pb::DType::DtypeBf16);
                let plain = client.lookup(&table, &ids).await.expect("lookup");
                assert_eq!(rows.bytes(), plain.bytes(), "layer {layer}");
            }
            // The same ids, already compressed, give the same rows.
            let map: Vec<u32> = (0..RAW_VOCAB).map(|r| r * 7919 % VOCAB).collect();
            let compressed: Vec<pb::TokenSequence> = sequences
                .iter()
                .map(|s| {
                    let t: Vec<u32> = s.tokens.iter().map(|&r| map[r as usize]).collect();
                    token_sequence(&t, &[])
                })
                .collect();
            let a = client
                .lookup_ngrams("g", layer, &sequences)
                .await
                .expect("raw");
            let b = client
                .lookup_ngrams_request(pb::LookupNgramsRequest {
                    group: "g".into(),
                    layer_id: layer,
                    sequences: compressed,
                    compressed: true,
                    ..Default::default()
                })
                .await
                .expect("compressed");
            assert_eq!(a.bytes(), b.bytes());
        }
        let empty = client.lookup_ngrams("g", 1, &[]).await.expect("empty");
        assert!(empty.is_empty());
        server.shutdown().await.expect("shutdown");
    }
}

#[tokio::test]
async fn continued_sequences_equal_whole_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    synth_group(dir.path(), &data).await;
    let (_engine, server, client) = common::start(&data, 1 << 20, IoEngineKind::Pread).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let tokens = random_sequence(&mut rng, 30);
    for layer in LAYERS {
        let whole = client
            .lookup_ngrams("g", layer, &[token_sequence(&tokens, &[])])
            .await
            .expect("whole");
        let row = |p: usize| &whole.bytes()[p * 8 * 16..(p + 1) * 8 * 16];
        for split in [1, 2, 7, 29] {
            let (head, tail) = tokens.split_at(split);
            // Full prefix as context (only its last 2 tokens matter), and just the last 2.
            for context in [head, &head[head.len().saturating_sub(2)..]] {
                let rows = client
                    .lookup_ngrams(
                        "g",
                        layer,
                        &[token_sequence(head, &[]), token_sequence(tail, context)],
                    )
                    .await
                    .expect("split");
                assert_eq!(rows.bytes(), whole.bytes(), "layer {layer} split {split}");
            }
        }
        // Decoding one token at a time with the two tokens before it.
        for p in 0..tokens.len() {
            let context = &tokens[p.saturating_sub(2)..p];
            let step = client
                .lookup_ngrams("g", layer, &[token_sequence(&tokens[p..=p], context)])
                .await
                .expect("step");
            assert_eq!(&step.bytes()[..], row(p), "layer {layer} position {p}");
        }
    }
    server.shutdown().await.expect("shutdown");
}

fn expect_error(
    result: Result<impl std::fmt::Debug, ClientError>,
    code: tonic::Code,
    parts: &[&str],
) {
    let err = result.expect_err("the call should fail");
    assert_eq!(err.code(), code, "{err}");
    let text = err.to_string();
    for part in parts {
        assert!(text.contains(part), "{text:?} should mention {part:?}");
    }
}

#[tokio::test]
async fn errors_name_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    synth_group(dir.path(), &data).await;
    let (_engine, server, client) = common::start(&data, 0, IoEngineKind::Pread).await;
    let ok = [token_sequence(&[1, 2, 3], &[])];
    use tonic::Code;
    expect_error(
        client.lookup_ngrams("nope", 1, &ok).await,
        Code::NotFound,
        &["\"nope\"", "[g]"],
    );
    expect_error(
        client.lookup_ngrams("g", 7, &ok).await,
        Code::NotFound,
        &["\"g\"", "layer 7", "[1, 3]"],
    );
    expect_error(
        client.prefetch_ngrams("nope", 1, &ok).await,
        Code::NotFound,
        &["\"nope\""],
    );
    let bad = [
        token_sequence(&[1, 2], &[]),
        token_sequence(&[4, 5, 6, RAW_VOCAB, 1], &[]),
    ];
    expect_error(
        client.lookup_ngrams("g", 1, &bad).await,
        Code::InvalidArgument,
        &["token id 1500", "sequence 1", "position 3", "0..1500"],
    );
    expect_error(
        client.prefetch_ngrams("g", 1, &bad).await,
        Code::InvalidArgument,
        &["token id 1500", "sequence 1", "position 3"],
    );
    let bad_context = [token_sequence(&[1], &[9, 99_999, 3])];
    expect_error(
        client.lookup_ngrams("g", 3, &bad_context).await,
        Code::InvalidArgument,
        &["99999", "sequence 0", "context index 1"],
    );
    let compressed = pb::LookupNgramsRequest {
        group: "g".into(),
        layer_id: 1,
        sequences: vec![token_sequence(&[0, 499, 500], &[])],
        compressed: true,
        ..Default::default()
    };
    expect_error(
        client.lookup_ngrams_request(compressed).await,
        Code::InvalidArgument,
        &["compressed token id 500", "position 2", "500"],
    );
    // 1251 positions x 8 heads = 10,008 rows: over the test server's 10,000 limit.
    let long = [token_sequence(&vec![1; 1251], &[])];
    expect_error(
        client.lookup_ngrams("g", 1, &long).await,
        Code::InvalidArgument,
        &["10008 rows", "10000"],
    );
    let fits = [token_sequence(&vec![1; 1250], &[])];
    assert_eq!(
        client
            .lookup_ngrams("g", 1, &fits)
            .await
            .expect("fits")
            .len(),
        10_000
    );
    server.shutdown().await.expect("shutdown");
}

fn tier<'a>(stats: &'a pb::StatsResponse, name: &str) -> &'a pb::TierStats {
    stats
        .tiers
        .iter()
        .find(|t| t.tier == name)
        .expect("tier present")
}

#[tokio::test]
async fn prefetched_rows_are_hit_by_the_next_lookup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    synth_group(dir.path(), &data).await;
    let (_engine, server, client) = common::start(&data, 8 << 20, IoEngineKind::Pread).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    let sequences: Vec<pb::TokenSequence> = (0..4)
        .map(|_| token_sequence(&random_sequence(&mut rng, 20), &[]))
        .collect();
    let mut distinct = local_row_ids(3, &sequences);
    distinct.sort_unstable();
    distinct.dedup();
    client.stats(true).await.expect("reset");
    let accepted = client
        .prefetch_ngrams("g", 3, &sequences)
        .await
        .expect("prefetch");
    assert_eq!(accepted, distinct.len() as u64);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = client.stats(false).await.expect("stats");
        if tier(&s, "ram").prefetch_rows == accepted {
            break;
        }
        assert!(Instant::now() < deadline, "prefetch did not finish: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows = client
        .lookup_ngrams("g", 3, &sequences)
        .await
        .expect("lookup");
    assert_eq!(rows.len(), 4 * 20 * 8);
    let s = client.stats(false).await.expect("stats");
    let (ram, nvme) = (tier(&s, "ram"), tier(&s, "nvme"));
    assert_eq!(ram.hits, accepted, "every distinct row from RAM: {ram:?}");
    assert_eq!(ram.misses, 0);
    assert_eq!(ram.prefetch_hits, accepted);
    assert_eq!(
        nvme.hits, accepted,
        "only the prefetch read from disk: {nvme:?}"
    );
    // A second lookup hits again but prefetched rows count once.
    client
        .lookup_ngrams("g", 3, &sequences)
        .await
        .expect("again");
    let s = client.stats(false).await.expect("stats");
    assert_eq!(tier(&s, "ram").hits, 2 * accepted);
    assert_eq!(tier(&s, "ram").prefetch_hits, accepted);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_ngrams_into_shared_memory_equals_lookup_ngrams() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    synth_group(dir.path(), &data).await;
    let (_engine, server, client) = common::start(&data, 1 << 20, IoEngineKind::Pread).await;
    let mut region = client.shm_region(8192).await.expect("region");
    region.as_mut_slice().fill(0xAA);
    let sequences = [
        token_sequence(&[5, 17, 300, 5, 17], &[]),
        token_sequence(&[9, 9], &[1, 2]),
    ];
    let (id, token) = (region.id(), region.token().to_owned());
    let written = client
        .lookup_ngrams_into(id, &token, 100, "g", 3, &sequences)
        .await
        .expect("lookup_ngrams_into");
    let bad = client
        .lookup_ngrams_into(id, &token, 0, "g", 3, &[token_sequence(&[RAW_VOCAB], &[])])
        .await;
    let bytes = region.as_slice();
    let want = client
        .lookup_ngrams("g", 3, &sequences)
        .await
        .expect("lookup_ngrams");
    assert_eq!(written as usize, 7 * 8 * 16);
    assert_eq!(&bytes[100..100 + written as usize], &want.bytes()[..]);
    assert!(bytes[..100].iter().all(|&b| b == 0xAA));
    assert!(bytes[100 + written as usize..].iter().all(|&b| b == 0xAA));
    expect_error(bad, tonic::Code::InvalidArgument, &["token id 1500"]);
    server.shutdown().await.expect("shutdown");
}

/// A safetensors file of the given f32 tensors (name, rows, cols, values).
fn safetensors(tensors: &[(&str, u64, u64, Vec<f32>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, rows, cols, values) in tensors {
        let begin = data.len();
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        header.insert(
            (*name).to_owned(),
            serde_json::json!({"dtype": "F32", "shape": [rows, cols], "data_offsets": [begin, data.len()]}),
        );
    }
    let json = serde_json::to_vec(&header).expect("json");
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(&data);
    out
}

#[tokio::test]
async fn weights_become_layer_tables_and_bad_shapes_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (layout_path, map_path) = write_inputs(dir.path());
    let layout = Layout::from_json_str(common::SMALL_LAYOUT).expect("layout");
    let rows = |l: u32| layout.layer(l).expect("layer").row_count();
    let values = |l: u32| -> Vec<f32> {
        (0..rows(l) * 8)
            .map(|i| (i as f32) * 0.5 + l as f32)
            .collect()
    };
    let weights = dir.path().join("w.safetensors");
    std::fs::write(
        &weights,
        safetensors(&[
            ("layers.1.engram.embedding", rows(1), 8, values(1)),
            ("layer3", rows(3), 8, values(3)),
        ]),
    )
    .expect("write weights");
    let data = dir.path().join("data");
    let opts = WriteOptions::default();
    let source = GroupSource::Weights(weights.clone());
    let created = create_group(&data, "w", &layout_path, &map_path, &source, &opts, None)
        .expect("create from weights");
    assert_eq!(created.tables.len(), 2);
    assert_eq!(created.tables[1].dtype, DType::F32);
    let again = create_group(&data, "w", &layout_path, &map_path, &source, &opts, None);
    assert!(matches!(again, Err(GroupError::Exists { .. })), "{again:?}");

    let (_engine, server, client) = common::start(&data, 0, IoEngineKind::Pread).await;
    let sequences = [token_sequence(&[5, 17, 300, 1499, 5], &[])];
    for layer in LAYERS {
        let got = client
            .lookup_ngrams("w", layer, &sequences)
            .await
            .expect("lookup");
        let want: Vec<u8> = local_row_ids(layer, &sequences)
            .iter()
            .flat_map(|&id| {
                values(layer)[id as usize * 8..(id as usize + 1) * 8]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<u8>>()
            })
            .collect();
        assert_eq!(&got.bytes()[..], &want[..], "layer {layer}");
    }
    server.shutdown().await.expect("shutdown");

    // A tensor of the wrong shape, and a missing one.
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(
        &bad,
        safetensors(&[
            ("layer1", rows(1), 8, values(1)),
            ("layer3", 10, 8, vec![0.0; 80]),
        ]),
    )
    .expect("write");
    let err = create_group(
        &data,
        "bad",
        &layout_path,
        &map_path,
        &GroupSource::Weights(bad),
        &opts,
        None,
    )
    .expect_err("wrong shape");
    let text = err.to_string();
    for part in ["\"layer3\"", "[10, 8]", &format!("[{}, 8]", rows(3))] {
        assert!(text.contains(part), "{text:?} should mention {part}");
    }
    let missing = dir.path().join("missing.safetensors");
    std::fs::write(&missing, safetensors(&[("layer1", rows(1), 8, values(1))])).expect("write");
    let err = create_group(
        &data,
        "m",
        &layout_path,
        &map_path,
        &GroupSource::Weights(missing),
        &opts,
        None,
    )
    .expect_err("missing tensor");
    let text = err.to_string();
    for part in ["layer 3", "layers.3.engram.embedding", "layer3", "[layer1]"] {
        assert!(text.contains(part), "{text:?} should mention {part}");
    }
    assert!(!data.join("m.engram").exists());
}

#[tokio::test]
async fn a_bad_layout_or_map_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (layout_path, map_path) = write_inputs(dir.path());
    let data = dir.path().join("data");
    let synth = GroupSource::Synth {
        dtype: DType::Bf16,
        seed: 0,
    };
    let opts = WriteOptions::default();
    // A map with a compressed id past the layout's vocabulary.
    let big_map = dir.path().join("big.npy");
    std::fs::write(&big_map, common::npy_i64(&[0, 1, 500])).expect("write");
    let err = create_group(&data, "g", &layout_path, &big_map, &synth, &opts, None)
        .expect_err("map outside layout");
    assert!(matches!(err, GroupError::Map { .. }), "{err}");
    // A layout with a composite "prime".
    let bad_layout = dir.path().join("bad.json");
    std::fs::write(&bad_layout, common::SMALL_LAYOUT.replace("1009", "1007")).expect("write");
    let err = create_group(&data, "g", &bad_layout, &map_path, &synth, &opts, None)
        .expect_err("not prime");
    assert!(matches!(err, GroupError::Layout { .. }), "{err}");
    let err = create_group(&data, ".g", &layout_path, &map_path, &synth, &opts, None)
        .expect_err("bad name");
    assert!(matches!(err, GroupError::InvalidName(_)), "{err}");
    assert!(!data.join("g.engram").exists());
}
