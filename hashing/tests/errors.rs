//! Every validation rule of a layout rejects what it should, with an error naming the bad value,
//! and the hasher rejects ids outside the layout, unknown layers and wrong output sizes without
//! touching its output.

use engram_store_hashing::{HashError, LayerHasher, Layout, LayoutError};
use serde_json::{Value, json};

/// A small valid layout: vocab 100, trigram, 2 heads, two layers.
fn good() -> Value {
    json!({
        "compressed_vocab_size": 100,
        "pad_id": 2,
        "max_ngram_size": 3,
        "n_head_per_ngram": 2,
        "row_dim": 8,
        "layers": [
            {"layer_id": 1, "multipliers": [3, 5, 7], "primes": [[101, 103], [107, 109]]},
            {"layer_id": 4, "multipliers": [9, 11, 13], "primes": [[113, 127], [131, 137]]}
        ]
    })
}

/// `good()` with one change applied, parsed.
fn parse_with(change: impl FnOnce(&mut Value)) -> Result<Layout, LayoutError> {
    let mut value = good();
    change(&mut value);
    Layout::from_json_str(&value.to_string())
}

/// Asserts the change is rejected, the error matches, and its message names `needle`.
fn rejects(change: impl FnOnce(&mut Value), matches: fn(&LayoutError) -> bool, needle: &str) {
    match parse_with(change) {
        Ok(layout) => panic!("accepted an invalid layout: {layout:?}"),
        Err(e) => {
            assert!(matches(&e), "unexpected error variant: {e:?}");
            let message = e.to_string();
            assert!(
                message.contains(needle),
                "{message:?} should name {needle:?}"
            );
        }
    }
}

#[test]
fn the_base_layout_is_valid() {
    let layout = parse_with(|_| {}).expect("valid");
    assert_eq!(layout.heads_total(), 4);
    let layer = layout.layer(4).expect("layer 4");
    assert_eq!(layer.offsets(), &[0, 113, 240, 371]);
    assert_eq!(layer.row_count(), 113 + 127 + 131 + 137);
}

#[test]
fn rejects_bad_json() {
    rejects(
        |v| v["row_dim"] = json!("eight"),
        |e| matches!(e, LayoutError::Json(_)),
        "\"eight\"", // serde_json names the value and its line and column
    );
    rejects(
        |v| v["extra"] = json!(1),
        |e| matches!(e, LayoutError::Json(_)),
        "extra",
    );
    rejects(
        |v| v["layers"][0]["multiplier"] = json!([1]),
        |e| matches!(e, LayoutError::Json(_)),
        "multiplier",
    );
    rejects(
        |v| v["compressed_vocab_size"] = json!(-1),
        |e| matches!(e, LayoutError::Json(_)),
        "-1",
    );
    assert!(matches!(
        Layout::from_json_str("{"),
        Err(LayoutError::Json(_))
    ));
}

#[test]
fn rejects_bad_global_fields() {
    rejects(
        |v| {
            v["max_ngram_size"] = json!(1);
            v["layers"] = json!([{"layer_id": 1, "multipliers": [3], "primes": []}]);
        },
        |e| matches!(e, LayoutError::NgramTooSmall(1)),
        "max_ngram_size is 1",
    );
    rejects(
        |v| v["n_head_per_ngram"] = json!(0),
        |e| matches!(e, LayoutError::NoHeads),
        "n_head_per_ngram",
    );
    rejects(
        |v| v["row_dim"] = json!(0),
        |e| matches!(e, LayoutError::ZeroRowDim),
        "row_dim",
    );
    rejects(
        |v| v["pad_id"] = json!(100),
        |e| {
            matches!(
                e,
                LayoutError::PadOutOfRange {
                    pad_id: 100,
                    compressed_vocab_size: 100
                }
            )
        },
        "pad_id 100",
    );
    rejects(
        |v| {
            v["compressed_vocab_size"] = json!(0);
            v["pad_id"] = json!(0);
        },
        |e| matches!(e, LayoutError::PadOutOfRange { .. }),
        "compressed_vocab_size 0",
    );
    rejects(
        |v| v["layers"] = json!([]),
        |e| matches!(e, LayoutError::NoLayers),
        "no layers",
    );
    rejects(
        |v| v["layers"][1]["layer_id"] = json!(1),
        |e| matches!(e, LayoutError::DuplicateLayer(1)),
        "layer 1",
    );
}

#[test]
fn rejects_bad_multipliers() {
    rejects(
        |v| v["layers"][0]["multipliers"] = json!([3, 5]),
        |e| {
            matches!(
                e,
                LayoutError::MultiplierCount {
                    layer_id: 1,
                    expected: 3,
                    found: 2
                }
            )
        },
        "2 multipliers",
    );
    rejects(
        |v| v["layers"][1]["multipliers"][2] = json!(14),
        |e| {
            matches!(
                e,
                LayoutError::EvenMultiplier {
                    layer_id: 4,
                    index: 2,
                    value: 14
                }
            )
        },
        "multipliers[2] = 14",
    );
    rejects(
        |v| v["layers"][0]["multipliers"][0] = json!(0),
        |e| matches!(e, LayoutError::EvenMultiplier { value: 0, .. }),
        "= 0 is even",
    );
    // 99 * m must stay <= i64::MAX: the largest odd m allowed passes, the next odd one fails.
    let max_ok = i64::MAX as u64 / 99;
    let max_ok = if max_ok % 2 == 1 { max_ok } else { max_ok - 1 };
    parse_with(|v| v["layers"][0]["multipliers"][1] = json!(max_ok)).expect("largest allowed");
    rejects(
        |v| v["layers"][0]["multipliers"][1] = json!(max_ok + 2),
        |e| {
            matches!(
                e,
                LayoutError::MultiplierOverflow {
                    layer_id: 1,
                    index: 1,
                    max_id: 99,
                    ..
                }
            )
        },
        &format!("multipliers[1] = {}", max_ok + 2),
    );
    rejects(
        |v| v["layers"][0]["multipliers"][1] = json!(u64::MAX),
        |e| matches!(e, LayoutError::MultiplierOverflow { .. }),
        "i64::MAX",
    );
}

#[test]
fn rejects_bad_primes() {
    rejects(
        |v| v["layers"][0]["primes"] = json!([[101, 103]]),
        |e| {
            matches!(
                e,
                LayoutError::PrimeOrderCount {
                    layer_id: 1,
                    expected: 2,
                    found: 1
                }
            )
        },
        "primes has 1 rows",
    );
    rejects(
        |v| v["layers"][1]["primes"][1] = json!([131, 137, 139]),
        |e| {
            matches!(
                e,
                LayoutError::PrimeHeadCount {
                    layer_id: 4,
                    order: 3,
                    expected: 2,
                    found: 3
                }
            )
        },
        "primes[1] (order 3) has 3 heads",
    );
    rejects(
        |v| v["layers"][1]["primes"][1][1] = json!(133),
        |e| {
            matches!(
                e,
                LayoutError::NotPrime {
                    layer_id: 4,
                    order: 3,
                    head: 1,
                    value: 133
                }
            )
        },
        "primes[1][1] = 133",
    );
    for not_prime in [0, 1, 561, 3_215_031_751_u64, u64::MAX] {
        rejects(
            |v| v["layers"][0]["primes"][0][0] = json!(not_prime),
            |e| matches!(e, LayoutError::NotPrime { .. }),
            &not_prime.to_string(),
        );
    }
    // Each prime is fine but their sum does not fit u64.
    let big = u64::MAX - 58; // the largest u64 prime
    rejects(
        |v| v["layers"][0]["primes"] = json!([[big, big], [107, 109]]),
        |e| matches!(e, LayoutError::RowCountOverflow { layer_id: 1 }),
        "overflows",
    );
}

#[test]
fn load_names_the_file() {
    let missing = concat!(env!("CARGO_MANIFEST_DIR"), "/layouts/no-such-layout.json");
    let e = Layout::load(missing).expect_err("missing file");
    assert!(matches!(e, LayoutError::Io { .. }));
    assert!(e.to_string().contains("no-such-layout.json"));
    // A file that exists but is not a layout: the error names the file and the cause.
    let not_layout = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let e = Layout::load(not_layout).expect_err("not JSON");
    assert!(
        matches!(&e, LayoutError::InFile { source, .. } if matches!(**source, LayoutError::Json(_)))
    );
    assert!(e.to_string().contains("Cargo.toml"));
}

#[test]
fn hasher_rejects_bad_requests() {
    let layout = parse_with(|_| {}).expect("valid");
    assert_eq!(
        LayerHasher::new(&layout, 2).map(|_| ()),
        Err(HashError::UnknownLayer(2))
    );
    let hasher = LayerHasher::new(&layout, 1).expect("layer 1");
    let mut out = vec![42; 5];
    assert_eq!(
        hasher.row_ids_into(&[1, 2, 100, 3], &[], &mut out),
        Err(HashError::TokenOutOfRange {
            position: 2,
            id: 100,
            compressed_vocab_size: 100
        })
    );
    assert_eq!(out, vec![42; 5], "output untouched on error");
    assert_eq!(
        hasher.hashes_into(&[1], &[5, 999], &mut out),
        Err(HashError::ContextOutOfRange {
            index: 1,
            id: 999,
            compressed_vocab_size: 100
        })
    );
    // Context ids beyond the last max_ngram_size - 1 are not read, so not checked either.
    hasher
        .row_ids_into(&[1], &[999, 5, 6], &mut out)
        .expect("old context ignored");
    assert_eq!(out.len(), 4);
    let mut short = [0; 7];
    assert_eq!(
        hasher.row_ids_to_slice(&[1, 2], &[], &mut short),
        Err(HashError::OutputLength {
            expected: 8,
            found: 7
        })
    );
    assert_eq!(short, [0; 7]);
    assert_eq!(
        hasher.output_len(usize::MAX),
        Err(HashError::OutputTooLarge {
            tokens: usize::MAX,
            heads_total: 4
        })
    );
    // Empty input is fine and clears the output.
    hasher.row_ids_into(&[], &[], &mut out).expect("empty");
    assert!(out.is_empty());
}
