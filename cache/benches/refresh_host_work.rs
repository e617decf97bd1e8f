//! Criterion bench: the host side of one VRAM-tier refresh of one table, at the size of the
//! H200 harness's tier (BENCHMARKS.md 10h): ranking the access counts for the hot set, and
//! bringing the row-id -> slot index up to date, each the old way and the new.
//!
//! Setup, per table as the harness's store has it: 24,003,916 rows, a tier of 4,887,589 slots
//! (8,388,608 index buckets), access counts for up to 4 ids a slot (19,550,356), filled with
//! 19,000,000 distinct ids (near that cap, short of the halving it triggers) of counts 1-8.
//! - `rank/map`: `HotCounter::top` over counts kept in a hash map (the only way before);
//! - `rank/bytes`: the same counts a byte per table row (`HotCounter::for_table`);
//! - `index/rebuild`: building the whole index from its 4.9M entries (before, every publish did
//!   this and uploaded all 101 MB of it, two publishes a refresh);
//! - `index/patch`: a refresh's edits in place, 50,000 rows leaving and 50,000 entering, which
//!   name the buckets a publish then uploads.
//!
//! Run: `cargo bench -p engram-store-cache --features cuda --bench refresh_host_work`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use engram_store_cache::gpu::{HotCounter, HotIndex, buckets_for};
use engram_store_cache::mix64;

const TABLE_ROWS: u64 = 24_003_916;
const SLOTS: usize = 4_887_589;
const CHURN: usize = 50_000;

/// Distinct rows counted.
const COUNTED: u64 = 19_000_000;

/// `COUNTED` distinct rows of the table (a stride prime to the row count), each hinted with a
/// weight of 1-8.
fn fill(counter: &HotCounter) {
    let ids: Vec<u64> = (0..COUNTED).map(|i| i * 1_000_003 % TABLE_ROWS).collect();
    for chunk in ids.chunks(1 << 16) {
        for weight in 1..=8u32 {
            let some: Vec<u64> = chunk
                .iter()
                .copied()
                .filter(|&id| (mix64(id ^ 7) % 8) as u32 + 1 == weight)
                .collect();
            counter.hint(&some, weight);
        }
    }
}

fn rank(c: &mut Criterion) {
    let mut g = c.benchmark_group("rank");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    let counted = 4 * SLOTS;
    let map = HotCounter::new(counted, 2);
    fill(&map);
    assert_eq!(map.len() as u64, COUNTED, "no halving while filling");
    g.bench_function("map", |b| b.iter(|| black_box(map.top(SLOTS, 2).len())));
    drop(map);
    let bytes = HotCounter::for_table(TABLE_ROWS, counted, 2);
    assert!(bytes.is_dense());
    fill(&bytes);
    g.bench_function("bytes", |b| b.iter(|| black_box(bytes.top(SLOTS, 2).len())));
    g.finish();
}

fn index(c: &mut Criterion) {
    let mut g = c.benchmark_group("index");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    let buckets = buckets_for(SLOTS);
    let entries: Vec<(u64, u32)> = (0..SLOTS as u64)
        .map(|i| (mix64(i) % TABLE_ROWS, i as u32))
        .collect();
    g.bench_function("rebuild", |b| {
        b.iter(|| black_box(HotIndex::build(entries.iter().copied(), buckets).keys.len()))
    });
    // Patch: the first CHURN entries leave and CHURN new rows take their slots, then back.
    let mut index = HotIndex::build(entries.iter().copied(), buckets);
    let fresh: Vec<(u64, u32)> = (0..CHURN as u64)
        .map(|i| (TABLE_ROWS + i, i as u32))
        .collect();
    let mut swapped = false;
    g.bench_function("patch", |b| {
        b.iter(|| {
            let (out, into) = if swapped {
                (&fresh[..], &entries[..CHURN])
            } else {
                (&entries[..CHURN], &fresh[..])
            };
            let mut changed = Vec::new();
            for &(id, _) in out {
                index.remove(id, &mut changed);
            }
            for &(id, slot) in into {
                index.insert(id, slot, &mut changed);
            }
            swapped = !swapped;
            black_box(changed.len())
        })
    });
    g.finish();
}

criterion_group!(benches, rank, index);
criterion_main!(benches);
