//! The row-id computation for one layer: compressed ids of a sequence -> the table row every
//! (position, n-gram order, head) reads.
//!
//! For position `t` and order `n`, with `x[t - k]` the compressed id `k` positions back (the
//! layout's pad id before the start of the sequence and its context):
//!
//! ```text
//! mix_n  = x[t]*m[0] XOR x[t-1]*m[1] XOR ... XOR x[t-n+1]*m[n-1]
//! hash   = mix_n mod primes[n-2][head]
//! row_id = hash + offset[j]        j = (n - 2) * n_head_per_ngram + head
//! ```
//!
//! `mix_n` extends `mix_{n-1}` by one product, so a position costs `max_ngram_size`
//! multiplications plus one Barrett reduction per head. Validation of the layout guarantees the
//! products fit `i64`, so `u64` arithmetic reproduces the int64 reference exactly.

use std::num::NonZeroU64;

use crate::divisor::Divisor;
use crate::error::HashError;
use crate::layout::Layout;

/// Computes row ids for one layer of a [`Layout`]. Build it once per layer and reuse it: it holds
/// the multipliers, the prepared moduli and the offsets, and allocates nothing per call.
#[derive(Debug, Clone)]
pub struct LayerHasher {
    layer_id: u32,
    max_ngram_size: usize,
    n_head_per_ngram: usize,
    compressed_vocab_size: u32,
    pad_id: u32,
    row_count: u64,
    multipliers: Box<[u64]>,
    /// One per head, in j order.
    divisors: Box<[Divisor]>,
    /// One per head, in j order.
    offsets: Box<[u64]>,
}

impl LayerHasher {
    /// The hasher of layer `layer_id` of `layout`.
    pub fn new(layout: &Layout, layer_id: u32) -> Result<Self, HashError> {
        let layer = layout
            .layer(layer_id)
            .ok_or(HashError::UnknownLayer(layer_id))?;
        let divisors = layer
            .primes()
            .iter()
            .flatten()
            // Validated primes are >= 2; the filter only keeps this free of a panic path.
            .filter_map(|&p| NonZeroU64::new(p).map(Divisor::new))
            .collect();
        Ok(Self {
            layer_id,
            max_ngram_size: layout.max_ngram_size(),
            n_head_per_ngram: layout.n_head_per_ngram(),
            compressed_vocab_size: layout.compressed_vocab_size(),
            pad_id: layout.pad_id(),
            row_count: layer.row_count(),
            multipliers: layer.multipliers().into(),
            divisors,
            offsets: layer.offsets().into(),
        })
    }

    /// The layer this hasher serves.
    pub fn layer_id(&self) -> u32 {
        self.layer_id
    }

    /// Row ids per position: `(max_ngram_size - 1) * n_head_per_ngram`.
    pub fn heads_total(&self) -> usize {
        self.offsets.len()
    }

    /// Rows in this layer's table; every row id is below it.
    pub fn row_count(&self) -> u64 {
        self.row_count
    }

    /// Length of the output for `n_tokens` tokens: `n_tokens * heads_total`.
    pub fn output_len(&self, n_tokens: usize) -> Result<usize, HashError> {
        n_tokens
            .checked_mul(self.heads_total())
            .ok_or(HashError::OutputTooLarge {
                tokens: n_tokens,
                heads_total: self.heads_total(),
            })
    }

    /// Row ids of `tokens` into `out`, laid out `[position][j]` row-major; `out` is cleared and
    /// resized, reusing its capacity.
    ///
    /// `context` holds the compressed ids just before `tokens[0]` (its last element comes right
    /// before); only its last `max_ngram_size - 1` elements matter and positions before it are
    /// the pad id, so `&[]` starts a sequence. On error `out` is left unchanged.
    pub fn row_ids_into(
        &self,
        tokens: &[u32],
        context: &[u32],
        out: &mut Vec<u64>,
    ) -> Result<(), HashError> {
        self.fill_vec::<true>(tokens, context, out)
    }

    /// Like [`LayerHasher::row_ids_into`], into a slice of exactly
    /// [`output_len(tokens.len())`](LayerHasher::output_len) elements.
    pub fn row_ids_to_slice(
        &self,
        tokens: &[u32],
        context: &[u32],
        out: &mut [u64],
    ) -> Result<(), HashError> {
        self.fill_slice::<true>(tokens, context, out)
    }

    /// The raw hashes (row ids without the head offsets), laid out like
    /// [`LayerHasher::row_ids_into`]. For tests and debugging.
    pub fn hashes_into(
        &self,
        tokens: &[u32],
        context: &[u32],
        out: &mut Vec<u64>,
    ) -> Result<(), HashError> {
        self.fill_vec::<false>(tokens, context, out)
    }

    /// Like [`LayerHasher::hashes_into`], into a slice of exactly
    /// [`output_len(tokens.len())`](LayerHasher::output_len) elements.
    pub fn hashes_to_slice(
        &self,
        tokens: &[u32],
        context: &[u32],
        out: &mut [u64],
    ) -> Result<(), HashError> {
        self.fill_slice::<false>(tokens, context, out)
    }

    fn fill_vec<const ROWS: bool>(
        &self,
        tokens: &[u32],
        context: &[u32],
        out: &mut Vec<u64>,
    ) -> Result<(), HashError> {
        let len = self.output_len(tokens.len())?;
        let context = self.check_inputs(tokens, context)?;
        out.clear();
        out.resize(len, 0);
        self.fill::<ROWS>(tokens, context, out);
        Ok(())
    }

    fn fill_slice<const ROWS: bool>(
        &self,
        tokens: &[u32],
        context: &[u32],
        out: &mut [u64],
    ) -> Result<(), HashError> {
        let expected = self.output_len(tokens.len())?;
        if out.len() != expected {
            return Err(HashError::OutputLength {
                expected,
                found: out.len(),
            });
        }
        let context = self.check_inputs(tokens, context)?;
        self.fill::<ROWS>(tokens, context, out);
        Ok(())
    }

    /// Checks every id that will be hashed is a compressed id, and returns the part of `context`
    /// that is used.
    fn check_inputs<'c>(&self, tokens: &[u32], context: &'c [u32]) -> Result<&'c [u32], HashError> {
        let limit = self.compressed_vocab_size;
        if let Some(position) = tokens.iter().position(|&id| id >= limit) {
            return Err(HashError::TokenOutOfRange {
                position,
                id: tokens[position],
                compressed_vocab_size: limit,
            });
        }
        let skip = context.len().saturating_sub(self.max_ngram_size - 1);
        let used = &context[skip..];
        if let Some(i) = used.iter().position(|&id| id >= limit) {
            return Err(HashError::ContextOutOfRange {
                index: skip + i,
                id: used[i],
                compressed_vocab_size: limit,
            });
        }
        Ok(used)
    }

    /// The hot loop. `out` has `tokens.len() * heads_total` elements; all ids are in range and
    /// `context.len() < max_ngram_size`.
    fn fill<const ROWS: bool>(&self, tokens: &[u32], context: &[u32], out: &mut [u64]) {
        let n = self.max_ngram_size;
        let heads_total = self.heads_total();
        // The first n - 1 positions reach back before tokens[0]: into the context, then the pad.
        let warmup = tokens.len().min(n - 1);
        let pad = u64::from(self.pad_id);
        let (head_rows, body_rows) = out.split_at_mut(warmup * heads_total);
        for (t, row) in head_rows.chunks_exact_mut(heads_total).enumerate() {
            self.fill_position::<ROWS>(row, |k| {
                if k <= t {
                    u64::from(tokens[t - k])
                } else {
                    // k - t positions before tokens[0].
                    let back = k - t;
                    context
                        .len()
                        .checked_sub(back)
                        .map_or(pad, |i| u64::from(context[i]))
                }
            });
        }
        // From position n - 1 on, the whole window lies in tokens.
        for (window, row) in tokens
            .windows(n)
            .zip(body_rows.chunks_exact_mut(heads_total))
        {
            self.fill_position::<ROWS>(row, |k| u64::from(window[n - 1 - k]));
        }
    }

    /// Fills one position's `heads_total` ids; `x(k)` is the id `k` positions back.
    #[inline(always)]
    fn fill_position<const ROWS: bool>(&self, row: &mut [u64], x: impl Fn(usize) -> u64) {
        let h = self.n_head_per_ngram;
        let mut mix = x(0) * self.multipliers[0];
        for (k, ((&m, out), (divisors, offsets))) in self.multipliers[1..]
            .iter()
            .zip(row.chunks_exact_mut(h))
            .zip(
                self.divisors
                    .chunks_exact(h)
                    .zip(self.offsets.chunks_exact(h)),
            )
            .enumerate()
        {
            mix ^= x(k + 1) * m;
            for ((o, d), &offset) in out.iter_mut().zip(divisors).zip(offsets) {
                *o = if ROWS {
                    d.rem(mix) + offset
                } else {
                    d.rem(mix)
                };
            }
        }
    }
}
