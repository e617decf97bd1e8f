//! DeepSeek-V4.1 hashing against vectors written from the rules (`testdata/engram/vectors-v41.json`,
//! made by `scripts/gen_v41_vectors.py`, an independent one-token-at-a-time statement of them):
//! layouts from the `engram_*` keys, row ids with dead tokens and context continuation, and
//! column ranges for 1, 2, 4 and 8 tensor-parallel ranks. Where the V4.1 rule coincides with the
//! Engram demo's (one vocabulary size for every order, seed 0), the layouts and every row id must
//! equal the shared demo and Engram-27B vectors as well.

use std::collections::BTreeMap;

use engram_store_hashing::{
    CompressionMap, EngramConfig, HashError, HashInput, LayerHasher, Layout, head_shard,
};
use serde::Deserialize;

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/engram");

#[derive(Deserialize)]
struct Vectors {
    configs: Vec<ConfigVectors>,
}

#[derive(Deserialize)]
struct ConfigVectors {
    name: String,
    config: serde_json::Value,
    pad_id: u32,
    map: Option<String>,
    layout: serde_json::Value,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    compressed_ids: Vec<u32>,
    dead: Vec<u8>,
    context: Vec<u32>,
    context_dead: Vec<u8>,
    raw_ids: Option<Vec<u32>>,
    context_raw_ids: Option<Vec<u32>>,
    layers: BTreeMap<String, Vec<Vec<u64>>>,
}

fn read(name: &str) -> String {
    let path = format!("{TESTDATA}/{name}");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn load_map(name: &str) -> CompressionMap {
    CompressionMap::load(format!("{TESTDATA}/{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn vectors() -> Vectors {
    serde_json::from_str(&read("vectors-v41.json")).expect("parse vectors-v41.json")
}

/// The layout of one vectors config, built from its keys (and its map, if it has one).
fn build_layout(v: &ConfigVectors) -> Layout {
    let config = EngramConfig::from_config_json(&v.config.to_string()).expect("config keys");
    match &v.map {
        Some(map) => config.layout(&load_map(map)).expect("layout from the map"),
        None => config.layout_with_pad(v.pad_id).expect("layout with pad"),
    }
}

#[test]
fn layouts_follow_the_v41_rule() {
    for v in vectors().configs {
        let layout = build_layout(&v);
        assert_eq!(layout.pad_id(), v.pad_id, "{}", v.name);
        let got: serde_json::Value =
            serde_json::from_str(&layout.to_json().expect("json")).expect("json");
        assert_eq!(got, v.layout, "{}: layout", v.name);
    }
}

#[test]
fn every_row_id_matches_with_dead_tokens_and_context() {
    let mut checked = 0;
    for v in vectors().configs {
        let layout = build_layout(&v);
        let map = v.map.as_deref().map(load_map);
        let width = layout.heads_total();
        let (mut rows, mut compressed, mut context) = (Vec::new(), Vec::new(), Vec::new());
        for case in &v.cases {
            let name = format!("{} {}", v.name, case.name);
            let (tokens, ctx) = match (&map, &case.raw_ids, &case.context_raw_ids) {
                (Some(map), Some(raw), Some(ctx_raw)) => {
                    // Dead tokens are not looked up: some cases give them ids outside the map.
                    map.compress_masked_into(raw, &case.dead, &mut compressed)
                        .unwrap_or_else(|e| panic!("{name}: compress: {e}"));
                    map.compress_masked_into(ctx_raw, &case.context_dead, &mut context)
                        .unwrap_or_else(|e| panic!("{name}: compress context: {e}"));
                    assert_eq!(compressed, case.compressed_ids, "{name}: compressed ids");
                    (compressed.as_slice(), context.as_slice())
                }
                _ => (case.compressed_ids.as_slice(), case.context.as_slice()),
            };
            let input = HashInput::new(tokens)
                .dead(&case.dead)
                .context(ctx, &case.context_dead);
            for (layer_id, want) in &case.layers {
                let layer_id: u32 = layer_id.parse().expect("layer id");
                let hasher = LayerHasher::new(&layout, layer_id).expect("layer");
                hasher
                    .rows_into(&input, 0..width, &mut rows)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(rows, want.concat(), "{name} layer {layer_id}");
                let mut slice = vec![0; rows.len()];
                hasher
                    .rows_to_slice(&input, 0..width, &mut slice)
                    .expect("slice");
                assert_eq!(slice, rows, "{name} layer {layer_id}: slice");
                if !case.dead.iter().chain(&case.context_dead).any(|&d| d != 0) {
                    // No dead token: the plain entry points agree.
                    hasher.row_ids_into(tokens, ctx, &mut slice).expect("plain");
                    assert_eq!(slice, rows, "{name} layer {layer_id}: row_ids_into");
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 18 * 2 + 5 * 3);
}

#[test]
fn column_ranges_for_1_2_4_8_ranks_are_slices_of_the_full_rows() {
    for v in vectors().configs {
        let layout = build_layout(&v);
        let width = layout.heads_total();
        let mut rows = Vec::new();
        for case in &v.cases {
            let input = HashInput::new(&case.compressed_ids)
                .dead(&case.dead)
                .context(&case.context, &case.context_dead);
            for (layer_id, want) in &case.layers {
                let layer_id: u32 = layer_id.parse().expect("layer id");
                let hasher = LayerHasher::new(&layout, layer_id).expect("layer");
                let layer = layout.layer(layer_id).expect("layer");
                for ranks in [1, 2, 4, 8] {
                    let Ok(first) = head_shard(width, ranks, 0) else {
                        continue;
                    };
                    assert_eq!(first.len(), width.div_ceil(ranks));
                    for rank in 0..ranks {
                        let Ok(cols) = head_shard(width, ranks, rank) else {
                            // 6 columns over 4 ranks (2 each) leave rank 3 none.
                            assert!(
                                rank * width.div_ceil(ranks) >= width,
                                "{width} over {ranks}"
                            );
                            continue;
                        };
                        hasher
                            .rows_into(&input, cols.clone(), &mut rows)
                            .expect("columns");
                        let expected: Vec<u64> = want
                            .iter()
                            .flat_map(|row| row[cols.clone()].iter().copied())
                            .collect();
                        assert_eq!(
                            rows, expected,
                            "{} {} layer {layer_id}: rank {rank} of {ranks}",
                            v.name, case.name
                        );
                        // Every id lies in the rows the rank's columns own.
                        let owned = layer.column_rows(cols.clone()).expect("rows of columns");
                        assert!(rows.iter().all(|r| owned.contains(r)));
                    }
                }
            }
        }
    }
}

/// The V4.1 keys that describe the demo (or Engram-27B) layout: one vocabulary size per order,
/// and the primes' sums as row counts.
fn coinciding_config(file: &str) -> (EngramConfig, serde_json::Value) {
    let vectors: serde_json::Value = serde_json::from_str(&read(file)).expect("parse");
    let c = &vectors["config"];
    let vocab = c["vocab_per_ngram"][0].as_u64().expect("vocab");
    assert!(
        c["vocab_per_ngram"]
            .as_array()
            .expect("list")
            .iter()
            .all(|v| v.as_u64() == Some(vocab))
    );
    assert_eq!(c["seed"], 0, "{file}: the V4.1 rule has no seed term");
    let layout = &vectors["layout"];
    let config = EngramConfig {
        layer_ids: serde_json::from_value(c["layer_ids"].clone()).expect("ids"),
        num_embeddings: layout["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| {
                l["primes"]
                    .as_array()
                    .expect("orders")
                    .iter()
                    .flat_map(|o| o.as_array().expect("heads").iter())
                    .map(|p| p.as_u64().expect("prime"))
                    .sum()
            })
            .collect(),
        max_ngram_size: c["max_ngram_size"].as_u64().expect("n") as usize,
        n_heads: c["n_head_per_ngram"].as_u64().expect("heads") as usize,
        head_dim: c["row_dim"].as_u64().expect("dim") as usize,
        vocab_size: vocab,
        compressed_vocab_size: layout["compressed_vocab_size"].as_u64().expect("cv"),
        pad_token_id: c["pad_raw_id"].as_u64().expect("pad") as u32,
    };
    (config, vectors)
}

#[test]
fn where_the_rules_coincide_the_shared_vectors_hold() {
    let map = load_map("dsv3-compress.npy");
    for (file, builtin) in [
        ("vectors-demo.json", Layout::demo()),
        ("vectors-engram27b.json", Layout::engram27b()),
    ] {
        let (config, vectors) = coinciding_config(file);
        let layout = config.layout(&map).expect("layout");
        assert_eq!(
            layout, builtin,
            "{file}: V4.1 rule at these keys gives the shared layout"
        );
        let width = layout.heads_total();
        let (mut rows, mut ids) = (Vec::new(), Vec::new());
        for case in vectors["cases"].as_array().expect("cases") {
            let raw: Vec<u32> = serde_json::from_value(case["raw_ids"].clone()).expect("raw");
            map.compress_into(&raw, &mut ids).expect("compress");
            let alive = vec![0u8; ids.len()];
            for layer in layout.layers() {
                let hasher = LayerHasher::new(&layout, layer.layer_id()).expect("layer");
                let want: Vec<Vec<u64>> = serde_json::from_value(
                    case["layers"][layer.layer_id().to_string()]["row_ids"].clone(),
                )
                .expect("row ids");
                // An all-alive mask is the same as no mask.
                for dead in [&[][..], &alive[..]] {
                    hasher
                        .rows_into(&HashInput::new(&ids).dead(dead), 0..width, &mut rows)
                        .expect("rows");
                    assert_eq!(rows, want.concat(), "{file} layer {}", layer.layer_id());
                }
            }
        }
    }
}

#[test]
fn a_dead_token_pads_its_position_and_what_reaches_through_it() {
    let layout = Layout::demo();
    let hasher = LayerHasher::new(&layout, 1).expect("layer");
    let pad = layout.pad_id();
    let width = layout.heads_total();
    let ids = [1134, 15695, 237, 2049, 1260, 85761];
    let mut dead = [0u8; 6];
    dead[2] = 1;
    let mut got = Vec::new();
    hasher
        .rows_into(&HashInput::new(&ids).dead(&dead), 0..width, &mut got)
        .expect("rows");
    let row = |tokens: &[u32]| {
        let mut out = Vec::new();
        hasher.row_ids_into(tokens, &[], &mut out).expect("plain");
        out[(tokens.len() - 1) * width..].to_vec()
    };
    // Position 2 (dead) hashes the all-pad window; position 3 sees [pad, pad, 2049] (order 2
    // reaches only position 2, which blocks); position 4 sees [pad, 2049, 1260]; position 5 is
    // clear of it.
    assert_eq!(got[2 * width..3 * width], row(&[pad, pad, pad]));
    assert_eq!(got[3 * width..4 * width], row(&[pad, pad, 2049]));
    assert_eq!(got[4 * width..5 * width], row(&[pad, 2049, 1260]));
    assert_eq!(got[5 * width..], row(&ids[3..]));
    // The blocked window is not the one the real id would give.
    assert_ne!(got[3 * width..4 * width], row(&ids[1..4]));
}

#[test]
fn masks_and_column_ranges_are_checked() {
    let layout = Layout::demo();
    let hasher = LayerHasher::new(&layout, 1).expect("layer");
    let mut out = vec![7u64];
    let ids = [1u32, 2, 3];
    let err = hasher
        .rows_into(&HashInput::new(&ids).dead(&[0, 1]), 0..16, &mut out)
        .expect_err("short mask");
    assert_eq!(
        err,
        HashError::MaskLength {
            what: "tokens",
            expected: 3,
            found: 2
        }
    );
    let err = hasher
        .rows_into(
            &HashInput::new(&ids).context(&[4, 5], &[1]),
            0..16,
            &mut out,
        )
        .expect_err("short context mask");
    assert!(
        matches!(
            err,
            HashError::MaskLength {
                what: "context",
                ..
            }
        ),
        "{err}"
    );
    for cols in [0..0, 3..17, 16..17] {
        let err = hasher
            .rows_into(&HashInput::new(&ids), cols.clone(), &mut out)
            .expect_err("bad columns");
        assert!(
            matches!(err, HashError::ColumnRange { .. }),
            "{cols:?}: {err}"
        );
        assert!(err.to_string().contains("16 columns"), "{err}");
    }
    // A dead token's id is not checked; a live one is.
    let big = [1u32, 500_000, 3];
    hasher
        .rows_into(&HashInput::new(&big).dead(&[0, 1, 0]), 0..16, &mut out)
        .expect("dead id unchecked");
    let err = hasher
        .rows_into(&HashInput::new(&big), 0..16, &mut out)
        .expect_err("live id checked");
    assert!(matches!(
        err,
        HashError::TokenOutOfRange { position: 1, .. }
    ));
    assert_eq!(
        out.len(),
        48,
        "an error leaves the output as the last success left it"
    );
    let mut short = vec![0u64; 5];
    assert!(matches!(
        hasher.rows_to_slice(&HashInput::new(&ids), 0..2, &mut short),
        Err(HashError::OutputLength {
            expected: 6,
            found: 5
        })
    ));
}
