//! Reproduces the Engram reference vectors (`testdata/engram/vectors-*.json`): the layout, the
//! compressed ids of every case through `dsv3-compress.npy`, and every hash and row id of every
//! case for every layer; then checks that hashing a sequence in pieces, each piece with the ids
//! before it as context, gives the same rows as hashing it whole.

use std::collections::BTreeMap;

use engram_store_hashing::{CompressionMap, LayerHasher, Layout};
use serde::Deserialize;

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/engram");

#[derive(Deserialize)]
struct Vectors {
    layout: serde_json::Value,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: Option<String>,
    raw_ids: Vec<u32>,
    compressed_ids: Vec<u32>,
    /// Keyed by layer id.
    layers: BTreeMap<String, LayerCase>,
}

#[derive(Deserialize)]
struct LayerCase {
    hash: Vec<Vec<u64>>,
    row_ids: Vec<Vec<u64>>,
}

impl Case {
    fn name(&self, index: usize) -> String {
        match &self.text {
            Some(text) => format!(
                "case {index} ({:?})",
                text.chars().take(30).collect::<String>()
            ),
            None => format!("case {index} (trace, {} tokens)", self.raw_ids.len()),
        }
    }
}

fn load_vectors(name: &str) -> Vectors {
    let path = format!("{TESTDATA}/{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

fn load_map() -> CompressionMap {
    CompressionMap::load(format!("{TESTDATA}/dsv3-compress.npy"))
        .unwrap_or_else(|e| panic!("load the DeepSeek-V3 compression map: {e}"))
}

fn flatten(rows: &[Vec<u64>], width: usize) -> Vec<u64> {
    for row in rows {
        assert_eq!(row.len(), width, "reference row width");
    }
    rows.concat()
}

/// The layout in the file, parsed and validated.
fn file_layout(vectors: &Vectors) -> Layout {
    Layout::from_json_str(&vectors.layout.to_string()).expect("the vectors' layout is valid")
}

#[test]
fn builtin_layouts_equal_the_vectors() {
    for (file, builtin) in [
        ("vectors-demo.json", Layout::demo()),
        ("vectors-engram27b.json", Layout::engram27b()),
    ] {
        let vectors = load_vectors(file);
        let layout = file_layout(&vectors);
        assert_eq!(layout, builtin, "{file}");
        // JSON round trip gives the same object, field for field.
        let json = layout.to_json().expect("serialize layout");
        let back: serde_json::Value = serde_json::from_str(&json).expect("to_json is JSON");
        assert_eq!(back, vectors.layout, "{file}: to_json");
        // serde's own path (try_from) agrees with from_json_str.
        let via_serde: Layout = serde_json::from_value(vectors.layout.clone()).expect("serde");
        assert_eq!(via_serde, layout);
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/layouts/engram27b.json");
    assert_eq!(Layout::load(path).expect("load file"), Layout::engram27b());
}

#[test]
fn compression_map_matches_the_vectors() {
    let map = load_map();
    assert_eq!(map.len(), 128_815);
    assert_eq!(map.compressed_vocab_size(), 98_627);
    assert_eq!(map.compress(2), Ok(2), "raw pad id 2 -> compressed 2");
    map.check_layout(&Layout::demo())
        .expect("map fits the demo layout");
    map.check_layout(&Layout::engram27b())
        .expect("map fits the 27B layout");
    let mut compressed = Vec::new();
    for file in ["vectors-demo.json", "vectors-engram27b.json"] {
        for (i, case) in load_vectors(file).cases.iter().enumerate() {
            map.compress_into(&case.raw_ids, &mut compressed)
                .expect("raw ids in range");
            assert_eq!(compressed, case.compressed_ids, "{file} {}", case.name(i));
            for (&raw, &want) in case.raw_ids.iter().zip(&case.compressed_ids) {
                assert_eq!(map.compress(raw), Ok(want));
            }
        }
    }
}

#[test]
fn every_hash_and_row_id_matches() {
    let map = load_map();
    let mut checked = 0;
    for file in ["vectors-demo.json", "vectors-engram27b.json"] {
        let vectors = load_vectors(file);
        let layout = file_layout(&vectors);
        let width = layout.heads_total();
        let (mut hashes, mut rows, mut compressed) = (Vec::new(), Vec::new(), Vec::new());
        for (i, case) in vectors.cases.iter().enumerate() {
            let name = case.name(i);
            map.compress_into(&case.raw_ids, &mut compressed)
                .expect("raw ids in range");
            assert_eq!(
                case.layers.len(),
                layout.layers().len(),
                "{file} {name}: layer count"
            );
            for (layer_id, want) in &case.layers {
                let layer_id: u32 = layer_id.parse().expect("layer keys are ids");
                let hasher = LayerHasher::new(&layout, layer_id).expect("layer in layout");
                hasher
                    .hashes_into(&compressed, &[], &mut hashes)
                    .expect("hash");
                hasher
                    .row_ids_into(&compressed, &[], &mut rows)
                    .expect("row ids");
                assert_eq!(
                    hashes,
                    flatten(&want.hash, width),
                    "{file} {name} layer {layer_id}: hash"
                );
                assert_eq!(
                    rows,
                    flatten(&want.row_ids, width),
                    "{file} {name} layer {layer_id}: row_ids"
                );
                assert!(rows.iter().all(|&r| r < hasher.row_count()));
                // The slice variants agree.
                let mut slice = vec![u64::MAX; hasher.output_len(compressed.len()).expect("len")];
                hasher
                    .row_ids_to_slice(&compressed, &[], &mut slice)
                    .expect("slice");
                assert_eq!(slice, rows);
                hasher
                    .hashes_to_slice(&compressed, &[], &mut slice)
                    .expect("slice");
                assert_eq!(slice, hashes);
                checked += 1;
            }
        }
    }
    // 14 demo cases + 12 Engram-27B cases, two layers each.
    assert_eq!(checked, (14 + 12) * 2);
}

/// Longest piece hashed after a split point.
const PIECE: usize = 64;

#[test]
fn continuing_with_context_matches_the_whole_sequence() {
    let map = load_map();
    for file in ["vectors-demo.json", "vectors-engram27b.json"] {
        let vectors = load_vectors(file);
        let layout = file_layout(&vectors);
        let width = layout.heads_total();
        let keep = layout.max_ngram_size() - 1;
        let (mut whole, mut part, mut ids) = (Vec::new(), Vec::new(), Vec::new());
        for (i, case) in vectors.cases.iter().enumerate() {
            map.compress_into(&case.raw_ids, &mut ids)
                .expect("raw ids in range");
            for layer in layout.layers() {
                let hasher = LayerHasher::new(&layout, layer.layer_id()).expect("layer");
                hasher.row_ids_into(&ids, &[], &mut whole).expect("whole");
                for split in 0..=ids.len() {
                    // The piece after the split runs to the end for the text cases and for
                    // PIECE tokens in the long trace cases (keeps the debug build fast).
                    let end = ids.len().min(split + PIECE);
                    let (before, after) = (&ids[..split], &ids[split..end]);
                    let trimmed = &before[before.len().saturating_sub(keep)..];
                    for context in [before, trimmed] {
                        hasher
                            .row_ids_into(after, context, &mut part)
                            .expect("part");
                        assert_eq!(
                            part,
                            whole[split * width..end * width],
                            "{file} {} layer {} split at {split}, context of {}",
                            case.name(i),
                            layer.layer_id(),
                            context.len()
                        );
                    }
                }
            }
        }
    }
}
