//! Randomized check of the hasher against a naive model written here with `u128` arithmetic, over
//! layouts of other shapes than the shared vectors: max n-gram 2..=5, 1..=6 heads per order,
//! random odd multipliers up to the overflow bound, small to large primes, random pad ids and
//! contexts.

use engram_store_hashing::{LayerHasher, LayerSpec, Layout, LayoutSpec, is_prime};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The smallest prime >= `from`; trial division below 2^24, the crate's Miller-Rabin above
/// (that one is checked against trial division in its unit tests).
fn next_prime(from: u64) -> u64 {
    let mut n = from.max(2);
    loop {
        let prime = if n < 1 << 24 {
            n >= 2
                && (2..)
                    .take_while(|d| d * d <= n)
                    .all(|d| !n.is_multiple_of(d))
        } else {
            is_prime(n)
        };
        if prime {
            return n;
        }
        n += 1;
    }
}

fn random_prime(rng: &mut StdRng) -> u64 {
    let from = match rng.random_range(0..4) {
        0 => rng.random_range(0..100),
        1 => rng.random_range(100..2_000_000),
        2 => rng.random_range(2_000_000..1 << 32),
        _ => rng.random_range(1 << 32..1 << 56),
    };
    next_prime(from)
}

fn random_spec(rng: &mut StdRng) -> LayoutSpec {
    let compressed_vocab_size = match rng.random_range(0..3) {
        0 => rng.random_range(1..=64),
        1 => rng.random_range(1..=200_000),
        _ => rng.random_range(1..=u32::MAX),
    };
    let max_ngram_size = rng.random_range(2..=5);
    let n_head_per_ngram = rng.random_range(1..=6);
    // The largest multiplier with (vocab - 1) * m <= i64::MAX.
    let bound = i64::MAX as u64 / u64::from(compressed_vocab_size - 1).max(1);
    let n_layers = rng.random_range(1..=3);
    let layers = (0..n_layers)
        .map(|i| LayerSpec {
            layer_id: i * 7 + rng.random_range(0..7),
            multipliers: (0..max_ngram_size)
                .map(|_| {
                    if rng.random_bool(0.1) {
                        // The largest odd multiplier allowed.
                        if bound % 2 == 1 { bound } else { bound - 1 }
                    } else {
                        rng.random_range(0..=(bound - 1) / 2) * 2 + 1
                    }
                })
                .collect(),
            primes: (0..max_ngram_size - 1)
                .map(|_| (0..n_head_per_ngram).map(|_| random_prime(rng)).collect())
                .collect(),
        })
        .collect();
    LayoutSpec {
        compressed_vocab_size,
        pad_id: rng.random_range(0..compressed_vocab_size),
        max_ngram_size,
        n_head_per_ngram,
        row_dim: rng.random_range(1..=256),
        layers,
    }
}

/// The model: straight from the definition, `[position][j]`, in `u128`.
fn model(spec: &LayoutSpec, layer: &LayerSpec, tokens: &[u32], context: &[u32]) -> Vec<(u64, u64)> {
    // The full id sequence: pads, then context, then tokens. Enough pads for any position.
    let pads = spec.max_ngram_size;
    let seq: Vec<u128> = std::iter::repeat_n(spec.pad_id, pads)
        .chain(context.iter().copied())
        .chain(tokens.iter().copied())
        .map(u128::from)
        .collect();
    let start = pads + context.len();
    let mut out = Vec::new();
    for t in 0..tokens.len() {
        let mut offset: u128 = 0;
        for n in 2..=spec.max_ngram_size {
            let mut mix: u128 = 0;
            for k in 0..n {
                mix ^= seq[start + t - k] * u128::from(layer.multipliers[k]);
            }
            for &prime in &layer.primes[n - 2] {
                let hash = mix % u128::from(prime);
                let hash64 = u64::try_from(hash).expect("hash < prime");
                let row = u64::try_from(hash + offset).expect("rows fit u64");
                out.push((hash64, row));
                offset += u128::from(prime);
            }
        }
    }
    out
}

#[test]
fn hasher_matches_the_u128_model() {
    let mut rng = StdRng::seed_from_u64(0x5eed_e96a);
    let (mut hashes, mut rows) = (vec![7; 3], Vec::new());
    let mut shapes = std::collections::BTreeSet::new();
    for round in 0..1500 {
        let spec = random_spec(&mut rng);
        let layout = Layout::try_from(spec.clone())
            .unwrap_or_else(|e| panic!("round {round}: random layout rejected: {e}"));
        shapes.insert((spec.max_ngram_size, spec.n_head_per_ngram));
        let limit = spec.compressed_vocab_size;
        for layer in &spec.layers {
            let hasher = LayerHasher::new(&layout, layer.layer_id).expect("layer exists");
            assert_eq!(hasher.heads_total(), layout.heads_total());
            for _ in 0..4 {
                let tokens: Vec<u32> = (0..rng.random_range(0..24))
                    .map(|_| {
                        // Favour the extremes: 0 and the largest id.
                        match rng.random_range(0..4) {
                            0 => limit - 1,
                            1 => 0,
                            _ => rng.random_range(0..limit),
                        }
                    })
                    .collect();
                let context: Vec<u32> = (0..rng.random_range(0..7))
                    .map(|_| rng.random_range(0..limit))
                    .collect();
                let want = model(&spec, layer, &tokens, &context);
                hasher
                    .hashes_into(&tokens, &context, &mut hashes)
                    .expect("hash");
                hasher
                    .row_ids_into(&tokens, &context, &mut rows)
                    .expect("rows");
                let got: Vec<(u64, u64)> =
                    hashes.iter().copied().zip(rows.iter().copied()).collect();
                assert_eq!(hashes.len(), rows.len());
                assert_eq!(
                    got, want,
                    "round {round}, layer {}, tokens {tokens:?}, context {context:?}, layout {spec:?}",
                    layer.layer_id
                );
                assert!(rows.iter().all(|&r| r < hasher.row_count()));
            }
        }
    }
    for n in 2..=5 {
        for h in 1..=6 {
            assert!(shapes.contains(&(n, h)), "shape ({n}, {h}) never drawn");
        }
    }
}
