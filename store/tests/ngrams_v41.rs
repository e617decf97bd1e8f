//! DeepSeek-V4.1 n-gram lookups over real gRPC: a group on the small V4.1-shaped layout of
//! `testdata/engram/vectors-v41.json` (2..4-grams x 8 heads = 24 columns; the DeepSeek-V3
//! compression map; synthetic rows), served through LookupNgrams, Prefetch and LookupInto with
//! dead tokens and column ranges. The vectors hold vLLM's row ids, written from its rules by
//! `scripts/gen_v41_vectors.py`: the served rows must be those rows (and the hashing crate's),
//! continued sequences must equal whole ones, every tensor-parallel rank's columns must be its
//! slice of the full answer, and bad masks and ranges must be INVALID_ARGUMENT naming the field.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use engram_store::group::{GroupSource, create_group};
use engram_store::ingest::WriteOptions;
use engram_store::table::{DType, synth_row};
use engram_store_cache::io::IoEngineKind;
use engram_store_client::{
    Client, ClientError, NgramsRequest, Rows, proto as pb, token_sequence_dead,
};
use engram_store_hashing::{HashInput, LayerHasher, Layout, head_shard};
use serde::Deserialize;

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/engram");
const GROUP: &str = "v41";
const SEED: u64 = 41;
const ROW_DIM: usize = 64;
/// Hash columns per position: 3 n-gram orders x 8 heads.
const COLUMNS: usize = 24;

#[derive(Deserialize)]
struct Vectors {
    configs: Vec<ConfigVectors>,
}

#[derive(Deserialize)]
struct ConfigVectors {
    name: String,
    layout: serde_json::Value,
    cases: Vec<Case>,
}

#[derive(Deserialize, Clone)]
struct Case {
    name: String,
    compressed_ids: Vec<u32>,
    dead: Vec<u8>,
    context: Vec<u32>,
    context_dead: Vec<u8>,
    raw_ids: Option<Vec<u32>>,
    context_raw_ids: Option<Vec<u32>>,
    /// Layer -> `[position][column]` row ids.
    layers: BTreeMap<String, Vec<Vec<u64>>>,
}

impl Case {
    fn ids(&self, layer: u32) -> Vec<u64> {
        self.layers[&layer.to_string()].concat()
    }

    fn compressed_sequence(&self) -> pb::TokenSequence {
        token_sequence_dead(
            &self.compressed_ids,
            &self.dead,
            &self.context,
            &self.context_dead,
        )
    }

    fn raw_sequence(&self) -> Option<pb::TokenSequence> {
        Some(token_sequence_dead(
            self.raw_ids.as_ref()?,
            &self.dead,
            self.context_raw_ids.as_ref()?,
            &self.context_dead,
        ))
    }
}

/// The small V4.1 config of the vectors (layers 1 and 14).
fn v41_small() -> ConfigVectors {
    let path = format!("{TESTDATA}/vectors-v41.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let v: Vectors = serde_json::from_str(&text).expect("parse the vectors");
    v.configs
        .into_iter()
        .find(|c| c.name == "v41-small")
        .expect("the v41-small config")
}

/// Creates group `v41` (u8 rows of 64, synthetic) on the vectors' layout in `data`.
fn create_v41_group(dir: &Path, data: &Path, config: &ConfigVectors) -> Layout {
    let layout_path = dir.join("layout.json");
    std::fs::write(&layout_path, config.layout.to_string()).expect("write layout");
    let map = PathBuf::from(format!("{TESTDATA}/dsv3-compress.npy"));
    let source = GroupSource::Synth {
        dtype: DType::U8,
        seed: SEED,
    };
    create_group(
        data,
        GROUP,
        &layout_path,
        &map,
        &source,
        &WriteOptions::default(),
        None,
    )
    .expect("create the V4.1 group");
    Layout::from_json_str(&config.layout.to_string()).expect("layout")
}

/// The synthetic rows of `ids`, packed: what a served answer must be, byte for byte.
fn synth_rows(ids: &[u64]) -> Vec<u8> {
    ids.iter()
        .flat_map(|&id| synth_row(SEED, DType::U8, ROW_DIM, id))
        .collect()
}

async fn lookup(client: &Client, req: NgramsRequest) -> Rows {
    client
        .lookup_ngrams_request(req)
        .await
        .expect("LookupNgrams")
}

#[tokio::test]
async fn vllm_row_ids_with_dead_spans_and_context_are_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = v41_small();
    let layout = create_v41_group(dir.path(), &data, &config);
    let (_engine, server, client) = common::start(&data, 4 << 20, IoEngineKind::Pread).await;
    let mut raw_checked = 0;
    for layer in [1u32, 14] {
        let hasher = LayerHasher::new(&layout, layer).expect("hasher");
        let mut all_ids = Vec::new();
        for case in &config.cases {
            let want = case.ids(layer);
            // The hashing crate computes the vectors' ids: the server uses it.
            let mut local = Vec::new();
            let input = HashInput::new(&case.compressed_ids)
                .dead(&case.dead)
                .context(&case.context, &case.context_dead);
            hasher
                .rows_into(&input, 0..COLUMNS, &mut local)
                .expect("hash");
            assert_eq!(local, want, "{} layer {layer}: hashing crate", case.name);
            let req = NgramsRequest::new(GROUP, layer, vec![case.compressed_sequence()]);
            let got = lookup(&client, req.compressed(true)).await;
            assert_eq!(got.len(), case.compressed_ids.len() * COLUMNS);
            assert_eq!(
                &got.bytes()[..],
                &synth_rows(&want)[..],
                "{} layer {layer}: compressed ids",
                case.name
            );
            // Raw ids (a dead token's is an image placeholder outside the map: never read).
            if let Some(raw) = case.raw_sequence() {
                let got = lookup(&client, NgramsRequest::new(GROUP, layer, vec![raw])).await;
                assert_eq!(
                    &got.bytes()[..],
                    &synth_rows(&want)[..],
                    "{} layer {layer}: raw ids",
                    case.name
                );
                raw_checked += 1;
            }
            all_ids.extend(want);
        }
        // Every case in one request: the rows of each, in order.
        let batch = config.cases.iter().map(Case::compressed_sequence).collect();
        let got = lookup(
            &client,
            NgramsRequest::new(GROUP, layer, batch).compressed(true),
        )
        .await;
        assert_eq!(&got.bytes()[..], &synth_rows(&all_ids)[..], "layer {layer}");
    }
    assert_eq!(raw_checked, 2 * config.cases.len());
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_dead_position_returns_the_rows_of_an_all_pad_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = v41_small();
    let layout = create_v41_group(dir.path(), &data, &config);
    let (_engine, server, client) = common::start(&data, 0, IoEngineKind::Pread).await;
    let pad = layout.pad_id();
    // Position 0 of a sequence holding just the pad id reads an all-pad window.
    let all_pad = lookup(
        &client,
        NgramsRequest::new(GROUP, 14, vec![token_sequence_dead(&[pad], &[], &[], &[])])
            .compressed(true),
    )
    .await;
    let tokens = [7u32, 4000, 99, 12, 555, 31];
    let dead = [0u8, 1, 0, 0, 1, 1];
    let got = lookup(
        &client,
        NgramsRequest::new(
            GROUP,
            14,
            vec![token_sequence_dead(&tokens, &dead, &[], &[])],
        )
        .compressed(true),
    )
    .await;
    let position =
        |rows: &Rows, p: usize| rows.bytes()[p * COLUMNS * ROW_DIM..][..COLUMNS * ROW_DIM].to_vec();
    for (p, &d) in dead.iter().enumerate() {
        if d != 0 {
            assert_eq!(
                position(&got, p),
                position(&all_pad, 0),
                "dead position {p}"
            );
        } else {
            assert_ne!(
                position(&got, p),
                position(&all_pad, 0),
                "live position {p}"
            );
        }
    }
    // Position 2 follows a dead token: its 2-gram reads [99, pad], like a sequence starting at 99.
    let start = lookup(
        &client,
        NgramsRequest::new(GROUP, 14, vec![token_sequence_dead(&[99], &[], &[], &[])])
            .compressed(true),
    )
    .await;
    assert_eq!(position(&got, 2), position(&start, 0));
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn continued_sequences_with_dead_tokens_equal_whole_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = v41_small();
    create_v41_group(dir.path(), &data, &config);
    let (_engine, server, client) = common::start(&data, 1 << 20, IoEngineKind::Pread).await;
    let case = config
        .cases
        .iter()
        .find(|c| c.name == "trace, image spans [0:160]")
        .expect("the trace case");
    let (tokens, dead) = (&case.compressed_ids, &case.dead);
    assert!(dead.iter().any(|&d| d != 0) && dead.contains(&0));
    for layer in [1u32, 14] {
        let whole = lookup(
            &client,
            NgramsRequest::new(GROUP, layer, vec![case.compressed_sequence()]).compressed(true),
        )
        .await;
        let width = COLUMNS * ROW_DIM;
        // Every split point where the dead mask changes, and a few others.
        let mut splits: Vec<usize> = (1..tokens.len())
            .filter(|&p| dead[p] != dead[p - 1])
            .collect();
        splits.extend([1, 2, 3, 50, 159]);
        for split in splits {
            // The whole prefix as context, and just the 3 tokens a 4-gram reaches back.
            for from in [0, split.saturating_sub(3)] {
                let head = token_sequence_dead(&tokens[..split], &dead[..split], &[], &[]);
                let tail = token_sequence_dead(
                    &tokens[split..],
                    &dead[split..],
                    &tokens[from..split],
                    &dead[from..split],
                );
                let got = lookup(
                    &client,
                    NgramsRequest::new(GROUP, layer, vec![head, tail]).compressed(true),
                )
                .await;
                assert_eq!(got.bytes(), whole.bytes(), "layer {layer} split {split}");
            }
        }
        // Decoding one token at a time with the 3 tokens before it and their mask.
        for p in 0..tokens.len() {
            let from = p.saturating_sub(3);
            let step = lookup(
                &client,
                NgramsRequest::new(
                    GROUP,
                    layer,
                    vec![token_sequence_dead(
                        &tokens[p..=p],
                        &dead[p..=p],
                        &tokens[from..p],
                        &dead[from..p],
                    )],
                )
                .compressed(true),
            )
            .await;
            assert_eq!(
                &step.bytes()[..],
                &whole.bytes()[p * width..(p + 1) * width],
                "layer {layer} position {p}"
            );
        }
    }
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_ranges_for_1_2_4_8_ranks_are_slices_of_the_full_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = v41_small();
    create_v41_group(dir.path(), &data, &config);
    let (_engine, server, client) = common::start(&data, 2 << 20, IoEngineKind::Pread).await;
    let cases: Vec<&Case> = config
        .cases
        .iter()
        .filter(|c| c.raw_ids.is_some())
        .take(6)
        .collect();
    let positions: usize = cases.iter().map(|c| c.compressed_ids.len()).sum();
    let sequences: Vec<pb::TokenSequence> = cases
        .iter()
        .map(|c| c.raw_sequence().expect("raw ids"))
        .collect();
    let mut region = client.shm_region(1 << 20).await.expect("region");
    let (region_id, token) = (region.id(), region.token().to_owned());
    for layer in [1u32, 14] {
        let full_ids: Vec<u64> = cases.iter().flat_map(|c| c.ids(layer)).collect();
        let full = lookup(&client, NgramsRequest::new(GROUP, layer, sequences.clone())).await;
        assert_eq!(&full.bytes()[..], &synth_rows(&full_ids)[..]);
        for ranks in [1usize, 2, 4, 8] {
            let mut together = vec![Vec::new(); positions];
            for rank in 0..ranks {
                let cols = head_shard(COLUMNS, ranks, rank).expect("shard");
                assert_eq!(cols.len(), COLUMNS / ranks);
                let range = cols.start as u32..cols.end as u32;
                let req = NgramsRequest::new(GROUP, layer, sequences.clone()).columns(range);
                let got = lookup(&client, req.clone()).await;
                assert_eq!(
                    got.len(),
                    positions * cols.len(),
                    "{ranks} ranks, rank {rank}"
                );
                // [sequence][position][column in range]: position p's columns of the full answer.
                for (p, rows) in together.iter_mut().enumerate() {
                    let mine = &got.bytes()[p * cols.len() * ROW_DIM..][..cols.len() * ROW_DIM];
                    let want = &full.bytes()[(p * COLUMNS + cols.start) * ROW_DIM..]
                        [..cols.len() * ROW_DIM];
                    assert_eq!(mine, want, "{ranks} ranks, rank {rank}, position {p}");
                    rows.extend_from_slice(mine);
                }
                // LookupInto and Prefetch take the same request.
                region.as_mut_slice().fill(0xEE);
                let written = client
                    .lookup_ngrams_into_request(region_id, &token, 64, req.clone())
                    .await
                    .expect("lookup into");
                assert_eq!(written as usize, got.bytes().len());
                assert_eq!(
                    &region.as_slice()[64..64 + written as usize],
                    &got.bytes()[..]
                );
                assert!(region.as_slice()[..64].iter().all(|&b| b == 0xEE));
                let mut distinct: Vec<u64> = (0..positions)
                    .flat_map(|p| full_ids[p * COLUMNS..][cols.clone()].to_vec())
                    .collect();
                distinct.sort_unstable();
                distinct.dedup();
                let accepted = client.prefetch_ngrams_request(req).await.expect("prefetch");
                assert_eq!(
                    accepted,
                    distinct.len() as u64,
                    "{ranks} ranks, rank {rank}"
                );
            }
            assert_eq!(
                together.concat(),
                full.bytes().to_vec(),
                "{ranks} ranks together"
            );
        }
    }
    server.shutdown().await.expect("shutdown");
}

fn expect_invalid(result: Result<impl std::fmt::Debug, ClientError>, parts: &[&str]) {
    let err = result.expect_err("the call should fail");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    let text = err.to_string();
    for part in parts {
        assert!(text.contains(part), "{text:?} should mention {part:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_masks_and_ranges_are_invalid_argument() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = v41_small();
    create_v41_group(dir.path(), &data, &config);
    let (_engine, server, client) = common::start(&data, 0, IoEngineKind::Pread).await;
    let region = client.shm_region(4096).await.expect("region");
    let ok = token_sequence_dead(&[5, 6, 7, 8, 9], &[0, 1, 0, 0, 0], &[1, 2], &[0, 0]);
    let short_mask = token_sequence_dead(&[5, 6, 7, 8, 9], &[0, 1, 0], &[], &[]);
    let long_context_mask = token_sequence_dead(&[5], &[], &[1, 2], &[0, 0, 1]);
    let cases: Vec<(NgramsRequest, Vec<&str>)> = vec![
        (
            NgramsRequest::new(GROUP, 14, vec![ok.clone(), short_mask]),
            vec![
                "TokenSequence.dead",
                "3 bytes for the 5 tokens of sequence 1",
                "empty or has one byte per token",
            ],
        ),
        (
            NgramsRequest::new(GROUP, 14, vec![long_context_mask]),
            vec![
                "TokenSequence.context_dead",
                "3 bytes for the 2 context tokens of sequence 0",
            ],
        ),
        (
            NgramsRequest::new(GROUP, 14, vec![ok.clone()]).columns(6..6),
            vec!["LookupNgramsRequest.columns = 6..6", "empty column range"],
        ),
        (
            // A reversed range, on purpose.
            NgramsRequest::new(GROUP, 14, vec![ok.clone()])
                .columns(std::ops::Range { start: 9, end: 3 }),
            vec!["LookupNgramsRequest.columns = 9..3"],
        ),
        (
            NgramsRequest::new(GROUP, 14, vec![ok.clone()]).columns(20..25),
            vec!["columns 20..25", "layer 14", "24 hash columns (0..24)"],
        ),
        (
            NgramsRequest::new(GROUP, 1, vec![ok.clone()]).columns(24..25),
            vec!["columns 24..25", "layer 1"],
        ),
    ];
    for (req, parts) in cases {
        expect_invalid(client.lookup_ngrams_request(req.clone()).await, &parts);
        expect_invalid(client.prefetch_ngrams_request(req.clone()).await, &parts);
        expect_invalid(
            client
                .lookup_ngrams_into_request(region.id(), region.token(), 0, req)
                .await,
            &parts,
        );
    }
    // A live raw id outside the map is still an error; the same id dead is not read.
    let outside = 1 << 30;
    expect_invalid(
        client
            .lookup_ngrams(
                GROUP,
                14,
                &[token_sequence_dead(&[5, outside], &[], &[], &[])],
            )
            .await,
        &["token id 1073741824", "sequence 0, position 1"],
    );
    let dead_outside = token_sequence_dead(&[5, outside], &[0, 1], &[outside], &[1]);
    assert_eq!(
        client
            .lookup_ngrams(GROUP, 14, &[dead_outside])
            .await
            .expect("dead ids are not read")
            .len(),
        2 * COLUMNS
    );
    // The batch limit (10,000 rows here) counts positions x columns.
    let ones = |n: usize| vec![token_sequence_dead(&vec![1; n], &[], &[], &[])];
    expect_invalid(
        client.lookup_ngrams(GROUP, 14, &ones(417)).await,
        &["10008 rows", "10000"],
    );
    assert_eq!(
        lookup(&client, NgramsRequest::new(GROUP, 14, ones(416)))
            .await
            .len(),
        416 * COLUMNS
    );
    let rank = |n: usize| NgramsRequest::new(GROUP, 14, ones(n)).columns(21..24);
    assert_eq!(lookup(&client, rank(3333)).await.len(), 9999);
    expect_invalid(
        client.lookup_ngrams_request(rank(3334)).await,
        &["10002 rows", "10000"],
    );
    server.shutdown().await.expect("shutdown");
}
