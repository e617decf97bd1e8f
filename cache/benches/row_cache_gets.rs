//! Criterion bench: throughput of RAM-tier cache gets from 2 threads, the RAM tier's
//! [`RowCache`] (one row at a time and in batches) side by side with moka's W-TinyLFU
//! (`moka::sync::Cache`, the library baseline), on the same Zipf key streams.
//!
//! Setup: rows of 160 bytes (the Engram-27B row), a universe of 1,000,000 row ids drawn with
//! Zipf exponent 0.99 and scattered over the id space, each cache sized for 20% of the universe
//! (200,000 rows) and warmed with one pass of the stream. A get copies the row into the caller's
//! buffer on a hit and offers it for admission on a miss, the way the server uses a cache; moka
//! holds each row as an `Arc<[u8]>` value (its idiomatic way to share values), which its get
//! clones. Each measured iteration runs 2 threads of [`OPS_PER_THREAD`] gets each; Criterion
//! reports elements (gets) per second. The limit beside them: a plain 160-byte copy from a
//! random slot of an array of the same bytes (no index, no policy) from 2 threads.
//!
//! Run: `cargo bench -p engram-store-cache --bench row_cache_gets`.

use std::hint::black_box;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use engram_store_cache::RowCacheBuilder;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Zipf};

const ROW_BYTES: usize = 160;
const UNIVERSE: u64 = 1_000_000;
const CACHE_ROWS: u64 = 200_000;
const OPS_PER_THREAD: usize = 1 << 18;
const THREADS: usize = 2;
const BATCH: usize = 4096;

/// A Zipf(0.99) stream of row ids over [`UNIVERSE`], ranks scattered over the id space.
fn zipf_stream(seed: u64, n: usize) -> Vec<u64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let zipf = Zipf::new(UNIVERSE as f64, 0.99).expect("valid Zipf parameters");
    (0..n)
        .map(|_| {
            let rank = zipf.sample(&mut rng) as u64 - 1;
            rank.wrapping_mul(0x9e37_79b9_7f4a_7c15) % (UNIVERSE * 64)
        })
        .collect()
}

fn row_of(id: u64) -> [u8; ROW_BYTES] {
    let mut row = [0u8; ROW_BYTES];
    row[..8].copy_from_slice(&id.to_le_bytes());
    row
}

/// Runs `work(thread)` on [`THREADS`] threads `iters` times; the wall time of all of it.
fn timed_threads<F>(iters: u64, work: F) -> Duration
where
    F: Fn(usize) + Sync,
{
    let start = Instant::now();
    for _ in 0..iters {
        thread::scope(|s| {
            for t in 0..THREADS {
                let work = &work;
                s.spawn(move || work(t));
            }
        });
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let streams: Vec<Vec<u64>> = (0..THREADS)
        .map(|t| zipf_stream(7 + t as u64, OPS_PER_THREAD))
        .collect();
    let mut group = c.benchmark_group("cache_gets_2_threads");
    group.throughput(Throughput::Elements((THREADS * OPS_PER_THREAD) as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));

    // Limit: a row copy from a random slot of a plain array, no index or policy.
    let plain: Vec<u8> = vec![7u8; CACHE_ROWS as usize * ROW_BYTES];
    group.bench_function("limit_plain_copy", |b| {
        b.iter_custom(|iters| {
            timed_threads(iters, |t| {
                let mut out = [0u8; ROW_BYTES];
                for &id in &streams[t] {
                    let at = (id % CACHE_ROWS) as usize * ROW_BYTES;
                    out.copy_from_slice(&plain[at..at + ROW_BYTES]);
                    black_box(&out);
                }
            })
        })
    });

    let budget = CACHE_ROWS * (ROW_BYTES as u64 + 16);
    let cache = RowCacheBuilder::new(ROW_BYTES)
        .budget_bytes(budget)
        .key_bound(UNIVERSE * 64)
        .build();
    let warm = |cache: &engram_store_cache::RowCache| {
        let mut out = [0u8; ROW_BYTES];
        for stream in &streams {
            for &id in stream {
                if !cache.get_into(id, &mut out) {
                    cache.insert(id, &row_of(id));
                }
            }
        }
    };
    warm(&cache);
    group.bench_function("row_cache_get_into", |b| {
        b.iter_custom(|iters| {
            timed_threads(iters, |t| {
                let mut out = [0u8; ROW_BYTES];
                for &id in &streams[t] {
                    if !cache.get_into(id, &mut out) {
                        cache.insert(id, &row_of(id));
                    }
                    black_box(&out);
                }
            })
        })
    });
    group.bench_function("row_cache_get_many_into_4096", |b| {
        b.iter_custom(|iters| {
            timed_threads(iters, |t| {
                let mut out = vec![0u8; BATCH * ROW_BYTES];
                let mut misses = Vec::new();
                for batch in streams[t].chunks(BATCH) {
                    misses.clear();
                    cache.get_many_into(
                        batch,
                        None,
                        &mut out[..batch.len() * ROW_BYTES],
                        &mut misses,
                    );
                    for &k in &misses {
                        cache.insert(batch[k], &row_of(batch[k]));
                    }
                    black_box(&out);
                }
            })
        })
    });
    println!(
        "row cache: {} rows resident, {:.1} metadata bytes per row",
        cache.stats().resident_rows,
        cache.stats().metadata_bytes as f64 / cache.stats().capacity_rows.max(1) as f64
    );
    drop(cache);

    let moka: moka::sync::Cache<u64, Arc<[u8]>> = moka::sync::Cache::builder()
        .max_capacity(CACHE_ROWS)
        .build();
    for stream in &streams {
        for &id in stream {
            if moka.get(&id).is_none() {
                moka.insert(id, Arc::from(&row_of(id)[..]));
            }
        }
    }
    group.bench_function("moka_get", |b| {
        b.iter_custom(|iters| {
            timed_threads(iters, |t| {
                let mut out = [0u8; ROW_BYTES];
                for &id in &streams[t] {
                    match moka.get(&id) {
                        Some(row) => out.copy_from_slice(&row),
                        None => moka.insert(id, Arc::from(&row_of(id)[..])),
                    }
                    black_box(&out);
                }
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
