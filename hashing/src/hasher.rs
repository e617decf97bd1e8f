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
//!
//! **Dead tokens** (DeepSeek-V4.1: image spans) take no part in any n-gram. Walking back from
//! position `t`, the first lookback `k` that is dead or before the start of the sequence and its
//! context *blocks* the rest: `x[t-k]` and every id further back read as the pad id. A dead token
//! therefore pads its own position (all of its n-grams hash the all-pad window) and every n-gram
//! that reaches through it, exactly as vLLM's `_hash_ids_kernel` does. A dead token's id is never
//! read, so it need not be a compressed id.
//!
//! **Columns**: the `j` of a position, `0..heads_total`. A tensor-parallel rank needs only a
//! contiguous range of them (see [`crate::head_shard`]); [`LayerHasher::rows_into`] computes only
//! those, in order.

use std::num::NonZeroU64;
use std::ops::Range;

use crate::divisor::Divisor;
use crate::error::HashError;
use crate::layout::Layout;

/// One sequence to hash: its compressed ids, the ids before it, and which of them are dead.
///
/// A dead mask is empty (no token dead) or has one byte per token, non-zero meaning dead: the
/// bytes of a protobuf `bytes` field or of a numpy bool array can be passed as they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HashInput<'a> {
    /// Compressed ids of the positions to hash.
    pub tokens: &'a [u32],
    /// Dead mask of `tokens` (empty, or `tokens.len()` bytes).
    pub dead: &'a [u8],
    /// Compressed ids just before `tokens[0]` (its last element comes right before); only the
    /// last `max_ngram_size - 1` matter, positions before them are the pad id.
    pub context: &'a [u32],
    /// Dead mask of `context` (empty, or `context.len()` bytes).
    pub context_dead: &'a [u8],
}

impl<'a> HashInput<'a> {
    /// `tokens` starting a sequence, none dead.
    pub fn new(tokens: &'a [u32]) -> Self {
        Self {
            tokens,
            ..Self::default()
        }
    }

    /// The same input with `dead` as the dead mask of its tokens.
    pub fn dead(mut self, dead: &'a [u8]) -> Self {
        self.dead = dead;
        self
    }

    /// The same input continuing after `context`, with its dead mask `context_dead` (may be
    /// empty).
    pub fn context(mut self, context: &'a [u32], context_dead: &'a [u8]) -> Self {
        self.context = context;
        self.context_dead = context_dead;
        self
    }

    fn any_dead(&self) -> bool {
        self.dead.iter().chain(self.context_dead).any(|&d| d != 0)
    }
}

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

    /// Row ids of `input` for the columns `columns` (a sub-range of `0..heads_total`), laid out
    /// `[position][column]` row-major, with dead tokens applied; `out` is cleared and resized,
    /// reusing its capacity. On error `out` is left unchanged.
    pub fn rows_into(
        &self,
        input: &HashInput<'_>,
        columns: Range<usize>,
        out: &mut Vec<u64>,
    ) -> Result<(), HashError> {
        let len = self.columns_output_len(input.tokens.len(), &columns)?;
        let (context, context_dead) = self.check_input(input)?;
        out.clear();
        out.resize(len, 0);
        self.fill_input(input, context, context_dead, columns, out);
        Ok(())
    }

    /// Like [`LayerHasher::rows_into`], into a slice of exactly `tokens x columns` elements.
    pub fn rows_to_slice(
        &self,
        input: &HashInput<'_>,
        columns: Range<usize>,
        out: &mut [u64],
    ) -> Result<(), HashError> {
        let expected = self.columns_output_len(input.tokens.len(), &columns)?;
        if out.len() != expected {
            return Err(HashError::OutputLength {
                expected,
                found: out.len(),
            });
        }
        let (context, context_dead) = self.check_input(input)?;
        self.fill_input(input, context, context_dead, columns, out);
        Ok(())
    }

    /// Output length for `n_tokens` tokens and a column range, after checking the range.
    fn columns_output_len(
        &self,
        n_tokens: usize,
        columns: &Range<usize>,
    ) -> Result<usize, HashError> {
        if columns.start >= columns.end || columns.end > self.heads_total() {
            return Err(HashError::ColumnRange {
                start: columns.start,
                end: columns.end,
                heads_total: self.heads_total(),
            });
        }
        n_tokens
            .checked_mul(columns.len())
            .ok_or(HashError::OutputTooLarge {
                tokens: n_tokens,
                heads_total: columns.len(),
            })
    }

    /// Checks the masks' lengths and every live id that will be hashed; returns the used tail of
    /// the context and of its mask (empty when the input has none).
    fn check_input<'c>(&self, input: &HashInput<'c>) -> Result<(&'c [u32], &'c [u8]), HashError> {
        for (what, mask, ids) in [
            ("tokens", input.dead, input.tokens.len()),
            ("context", input.context_dead, input.context.len()),
        ] {
            if !mask.is_empty() && mask.len() != ids {
                return Err(HashError::MaskLength {
                    what,
                    expected: ids,
                    found: mask.len(),
                });
            }
        }
        let limit = self.compressed_vocab_size;
        let live = |mask: &[u8], i: usize| mask.get(i).is_none_or(|&d| d == 0);
        if let Some(position) =
            (0..input.tokens.len()).find(|&i| live(input.dead, i) && input.tokens[i] >= limit)
        {
            return Err(HashError::TokenOutOfRange {
                position,
                id: input.tokens[position],
                compressed_vocab_size: limit,
            });
        }
        let skip = input.context.len().saturating_sub(self.max_ngram_size - 1);
        if let Some(index) = (skip..input.context.len())
            .find(|&i| live(input.context_dead, i) && input.context[i] >= limit)
        {
            return Err(HashError::ContextOutOfRange {
                index,
                id: input.context[index],
                compressed_vocab_size: limit,
            });
        }
        let context_dead = if input.context_dead.is_empty() {
            &[][..]
        } else {
            &input.context_dead[skip..]
        };
        Ok((&input.context[skip..], context_dead))
    }

    /// Fills `out` for a checked input: the plain hot loop when nothing is dead and every column
    /// is wanted, else position by position.
    fn fill_input(
        &self,
        input: &HashInput<'_>,
        context: &[u32],
        context_dead: &[u8],
        columns: Range<usize>,
        out: &mut [u64],
    ) {
        let all_columns = columns.start == 0 && columns.end == self.heads_total();
        if all_columns && !input.any_dead() {
            self.fill::<true>(input.tokens, context, out);
            return;
        }
        let n = self.max_ngram_size;
        let pad = u64::from(self.pad_id);
        let width = columns.len();
        let mut window = vec![pad; n];
        for (t, row) in out.chunks_exact_mut(width).enumerate() {
            // window[k]: the id k positions back, or the pad id once blocked.
            let mut blocked = false;
            for (k, slot) in window.iter_mut().enumerate() {
                if !blocked {
                    let (id, dead) = if k <= t {
                        let i = t - k;
                        (input.tokens[i], input.dead.get(i).is_some_and(|&d| d != 0))
                    } else {
                        match context.len().checked_sub(k - t) {
                            Some(i) => (context[i], context_dead.get(i).is_some_and(|&d| d != 0)),
                            // Before the start of the sequence and its context.
                            None => (0, true),
                        }
                    };
                    blocked = dead;
                    *slot = if dead { pad } else { u64::from(id) };
                } else {
                    *slot = pad;
                }
            }
            self.fill_columns(row, &window, columns.clone());
        }
    }

    /// Fills the columns `columns` of one position from its window (`window[k]` the id `k` back).
    fn fill_columns(&self, row: &mut [u64], window: &[u64], columns: Range<usize>) {
        let h = self.n_head_per_ngram;
        let mut mix = window[0] * self.multipliers[0];
        let mut out = row.iter_mut();
        for (k, (&x, &m)) in window
            .iter()
            .zip(self.multipliers.iter())
            .enumerate()
            .skip(1)
        {
            mix ^= x * m;
            let first = (k - 1) * h;
            let lo = columns.start.max(first);
            let hi = columns.end.min(first + h);
            for j in lo..hi {
                if let Some(o) = out.next() {
                    *o = self.divisors[j].rem(mix) + self.offsets[j];
                }
            }
        }
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
