//! The VRAM tier against a model on a real GPU (feature `cuda`): hits return the right rows,
//! misses are flagged, the budget holds, and refreshes under concurrent lookups never expose a
//! wrong row. Without a GPU every test prints why it skips.
#![cfg(feature = "cuda")]

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use engram_store_cache::gpu::{GpuTier, GpuTierConfig, SHARED_GRACE, SHARED_PARTS, probe};
use engram_store_cache::mix64;

const ROW: usize = 160;

/// The tests take turns on the device: the budget test measures the device's free memory,
/// which another test's tier would change under it.
static DEVICE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn device_turn() -> std::sync::MutexGuard<'static, ()> {
    DEVICE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
const ROWS: u64 = 200_000;

fn row(id: u64) -> Vec<u8> {
    (0..ROW)
        .map(|i| (mix64(id * 131 + (i as u64 / 8)) >> ((i % 8) * 8)) as u8)
        .collect()
}

fn tier(budget: u64) -> Option<GpuTier> {
    if let Err(e) = probe(0) {
        println!("SKIP: no usable GPU ({e})");
        return None;
    }
    let mut c = GpuTierConfig::new(0, budget, ROW);
    c.max_batch = 8192;
    c.refresh_chunk = 4096;
    // As the store builds its tiers: the counts a byte a row of the table.
    c.table_rows = Some(ROWS);
    Some(GpuTier::new(&c).expect("GPU tier"))
}

fn refresh_to(t: &GpuTier, hot: impl Iterator<Item = u64> + Clone) {
    // Hints are counted unsampled, so every row of `hot` is a candidate.
    t.hint(&hot.clone().collect::<Vec<_>>());
    let plan = t.plan_refresh();
    let bytes: Vec<u8> = plan.entering.iter().flat_map(|&id| row(id)).collect();
    t.apply_refresh(&plan, &bytes).expect("refresh");
}

fn check(t: &GpuTier, ids: &[u64]) -> u64 {
    let mut out = vec![0u8; ids.len() * ROW];
    let mut hit = Vec::new();
    let hits = t.gather_to_host(ids, &mut out, &mut hit).expect("gather");
    for (i, &id) in ids.iter().enumerate() {
        assert_eq!(hit[i], t.contains(id), "hit flag of row {id}");
        if hit[i] {
            assert_eq!(&out[i * ROW..(i + 1) * ROW], row(id).as_slice(), "row {id}");
        }
    }
    hits
}

#[test]
fn hits_are_right_misses_are_flagged() {
    let _turn = device_turn();
    let Some(t) = tier(32 << 20) else { return };
    assert!(t.capacity_rows() > 10_000, "capacity {}", t.capacity_rows());
    refresh_to(&t, 0..10_000u64);
    assert_eq!(t.stats().resident_rows, 10_000);
    let ids: Vec<u64> = (0..20_000u64).map(|i| mix64(i) % 20_000).collect();
    let hits = check(&t, &ids);
    assert!(hits > 8_000 && hits < 12_000, "{hits}");
    // Larger than max_batch: chunked.
    let many: Vec<u64> = (0..30_000u64).map(|i| mix64(i + 7) % ROWS).collect();
    check(&t, &many);
}

#[test]
fn a_refresh_under_way_shows_its_rows_until_it_ends() {
    let _turn = device_turn();
    let Some(t) = tier(32 << 20) else { return };
    assert_eq!(t.stats().rows_entering, 0);
    t.hint(&(0..5_000u64).collect::<Vec<_>>());
    let plan = t.plan_refresh();
    {
        let _underway = t.refresh_underway(plan.entering.len());
        assert_eq!(t.stats().rows_entering, 5_000);
        let bytes: Vec<u8> = plan.entering.iter().flat_map(|&id| row(id)).collect();
        t.apply_refresh(&plan, &bytes).expect("refresh");
        assert_eq!(t.stats().resident_rows, 5_000);
    }
    assert_eq!(
        t.stats().rows_entering,
        0,
        "cleared when the refresh's guard drops"
    );
    // A refresh that fails part-way clears it too; two under way at once add up.
    let stale = t.plan_refresh();
    {
        let _underway = t.refresh_underway(1);
        {
            let _other = t.refresh_underway(7);
            assert_eq!(t.stats().rows_entering, 8);
        }
        assert_eq!(t.stats().rows_entering, 1);
        assert!(t.apply_refresh(&stale, &[0u8; 3]).is_err());
    }
    assert_eq!(t.stats().rows_entering, 0);
}

#[test]
fn stays_within_its_budget() {
    let _turn = device_turn();
    if let Err(e) = probe(0) {
        println!("SKIP: no usable GPU ({e})");
        return;
    }
    let budget = 64u64 << 20;
    let ctx = probe(0).expect("device");
    ctx.bind_to_thread().expect("bind");
    let (free_before, _) = cudarc::driver::result::mem_get_info().expect("mem info");
    let t = tier(budget).expect("tier");
    let (free_after, _) = cudarc::driver::result::mem_get_info().expect("mem info");
    assert!(t.stats().device_bytes <= budget);
    let used = free_before.saturating_sub(free_after) as u64;
    // Allocations round up to 2 MiB pages and the kernels' module takes a little: 8 MiB slack.
    assert!(
        used <= budget + (8 << 20),
        "device memory used {used} > budget {budget}"
    );
    println!(
        "budget {budget}, accounted {}, measured {used}",
        t.stats().device_bytes
    );
}

#[test]
fn refresh_under_concurrent_lookups_never_serves_a_wrong_row() {
    let _turn = device_turn();
    // Small enough that each refresh evicts rows (the five shared buffers take 2 MiB each at
    // least: allocations of a granularity).
    let Some(t) = tier(14 << 20) else { return };
    assert!(t.capacity_rows() < 40_000, "capacity {}", t.capacity_rows());
    let t = Arc::new(t);
    refresh_to(&t, 0..20_000u64);
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|r| {
            let (t, stop) = (t.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let ids: Vec<u64> = (0..4096u64)
                        .map(|i| mix64(i + n * 4096 + r * 1_000_000) % 60_000)
                        .collect();
                    let mut out = vec![0u8; ids.len() * ROW];
                    let mut hit = Vec::new();
                    t.gather_to_host(&ids, &mut out, &mut hit).expect("gather");
                    for (i, &id) in ids.iter().enumerate() {
                        if hit[i] {
                            assert_eq!(
                                &out[i * ROW..(i + 1) * ROW],
                                row(id).as_slice(),
                                "row {id}"
                            );
                        }
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    for round in 1..=6u64 {
        let start = round * 7_000;
        refresh_to(&t, start..start + 20_000);
    }
    stop.store(true, Ordering::Relaxed);
    let mut batches = 0;
    for r in readers {
        batches += r.join().expect("reader");
    }
    assert!(batches > 0);
    assert!(t.stats().refreshes >= 6);
    println!("{batches} batches checked across 7 refreshes");
}

/// Refreshes that evict and load a few thousand rows each (the index patched bucket by bucket,
/// the two device buffers alternating): after every one, each id of the universe is a hit on
/// the device exactly when the host says it is resident, with the right row.
#[test]
fn patched_indexes_match_the_resident_set_after_every_refresh() {
    let _turn = device_turn();
    let Some(t) = tier(14 << 20) else { return };
    let universe: Vec<u64> = (0..80_000u64).collect();
    let window = 20_000u64.min(t.capacity_rows() as u64);
    let resident =
        |t: &GpuTier| -> Vec<bool> { universe.iter().map(|&id| t.contains(id)).collect() };
    let mut first = Vec::new();
    for round in 0..12u64 {
        let start = round * 3_000;
        refresh_to(&t, start..start + window);
        let hits = check(&t, &universe);
        assert_eq!(hits, t.stats().resident_rows, "round {round}");
        if round == 0 {
            first = resident(&t);
        }
    }
    let last = resident(&t);
    let evicted = first.iter().zip(&last).filter(|&(a, b)| *a && !*b).count();
    assert!(evicted > 0, "no refresh evicted a row");
    assert!(t.stats().refreshes >= 12);
    println!("{evicted} rows of the first hot set evicted over 12 refreshes");
}

/// `gpu_alloc_fail`: the tier's device memory cannot be had; creating it fails with a clear
/// error before the device is touched (so this runs on machines without a GPU too).
#[cfg(feature = "failpoints")]
#[test]
fn gpu_alloc_failure_is_an_error_not_a_panic() {
    let _turn = device_turn();
    let scenario = fail::FailScenario::setup();
    fail::cfg("gpu_alloc_fail", "return").expect("set failpoint");
    let err = GpuTier::new(&GpuTierConfig::new(0, 64 << 20, 160)).expect_err("no memory");
    let text = err.to_string();
    assert!(text.contains("allocate the VRAM tier"), "{text}");
    assert!(text.contains("gpu_alloc_fail"), "{text}");
    scenario.teardown();
}

/// Sharing exports the tier's memory (five file descriptors, new each time, of whole allocations
/// at least as large as the buffers; the tier's geometry) and from
/// then on a refresh waits out the grace before rewriting what it freed; lookups stay right.
#[test]
fn a_shared_tier_exports_its_memory_and_rewrites_after_the_grace() {
    let _turn = device_turn();
    let Some(t) = tier(32 << 20) else { return };
    refresh_to(&t, 0..1000u64);
    let started = std::time::Instant::now();
    refresh_to(&t, 1000..2000u64);
    let unshared = started.elapsed();
    assert!(
        unshared < SHARED_GRACE,
        "an unshared refresh waits for nothing: {unshared:?}"
    );
    let shared = t.share().expect("share");
    assert_eq!(shared.capacity, t.capacity_rows());
    assert_eq!(shared.row_bytes, ROW);
    assert!(shared.buckets.is_power_of_two() && shared.buckets >= shared.capacity);
    let (cap, buckets) = (shared.capacity as u64, shared.buckets as u64);
    let least = [
        cap * ROW as u64,
        2 * buckets * 8,
        2 * buckets * 4,
        cap * 8,
        8,
    ];
    let fds: Vec<i32> = shared.parts.iter().map(|p| p.fd.as_raw_fd()).collect();
    for (i, (part, least)) in shared.parts.iter().zip(least).enumerate() {
        assert!(
            part.bytes >= least && part.bytes % (1 << 16) == 0,
            "{}: {} bytes to map, not a whole allocation of at least {least}",
            SHARED_PARTS[i],
            part.bytes
        );
        assert!(fds[i] >= 0 && !fds[i + 1..].contains(&fds[i]));
    }
    let again = t.share().expect("share again");
    assert!(
        again.parts.iter().all(|p| !fds.contains(&p.fd.as_raw_fd())),
        "each share exports new file descriptors"
    );
    drop(again);
    refresh_to(&t, 2000..3000u64);
    // The shared refresh rewrites no sooner than the grace after the last publish, which the
    // unshared refresh made after `started` (without the wait both took far less).
    let took = started.elapsed();
    assert!(
        took >= SHARED_GRACE,
        "two refreshes, the second shared, took {took:?}: less than the grace"
    );
    assert!(t.contains(2500));
    let ids: Vec<u64> = (0..4000u64).collect();
    assert!(check(&t, &ids) >= 3000);
}
