//! `engram-bench gpu` (feature `cuda`): the VRAM tier's gather kernel on a real GPU, beside the
//! plain gather-by-index it must match (what `torch.index_select` does; the torch numbers come
//! from `benches/gpu/torch_baselines.py` in the same session). Reports kernel-only rows/s with
//! ids already on the device, and end-to-end rows/s of a gather call (ids up, kernel, hit
//! flags down) into device memory and into host memory.

use std::time::Instant;

use clap::Args;
use cudarc::driver::DevicePtr;
use engram_store_cache::gpu::{GpuTier, GpuTierConfig};
use rand::{Rng, SeedableRng};

/// `gpu` flags.
#[derive(Debug, Args)]
pub struct GpuArgs {
    /// Device bytes for the tier (arena + indexes + scratch), e.g. 48GiB.
    #[arg(long, default_value = "48GiB", value_parser = engram_store::size::parse_size)]
    pub budget: u64,
    /// Bytes per row.
    #[arg(long, default_value_t = 160)]
    pub row_bytes: usize,
    /// Batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "65536,1048576")]
    pub batches: Vec<usize>,
    /// Kernel launches timed per batch size.
    #[arg(long, default_value_t = 50)]
    pub iterations: usize,
    /// CUDA device.
    #[arg(long, default_value_t = 0)]
    pub device: usize,
}

/// Runs the GPU benchmark.
pub fn run(args: &GpuArgs) -> anyhow::Result<()> {
    let max_batch = args.batches.iter().copied().max().unwrap_or(1 << 20);
    let mut cfg = GpuTierConfig::new(args.device, args.budget, args.row_bytes);
    cfg.max_batch = max_batch;
    let t0 = Instant::now();
    let tier = GpuTier::new(&cfg)?;
    let cap = tier.capacity_rows();
    tier.load_identity(cap)?;
    let s = tier.stats();
    println!(
        "GPU tier: budget {:.1} GiB, {} rows of {} B resident ({:.1} GiB arena), device bytes {:.1} GiB, set up in {:.1}s",
        args.budget as f64 / (1u64 << 30) as f64,
        cap,
        args.row_bytes,
        (cap * args.row_bytes) as f64 / (1u64 << 30) as f64,
        s.device_bytes as f64 / (1u64 << 30) as f64,
        t0.elapsed().as_secs_f64()
    );
    let stream = tier.context().default_stream();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    println!(
        "batch     kernel_hashed_rows/s  kernel_by_slot_rows/s  call_to_device_rows/s  call_to_host_rows/s"
    );
    for &n in &args.batches {
        let ids: Vec<u64> = (0..n).map(|_| rng.random_range(0..cap as u64)).collect();
        let hashed = tier.time_kernel(&ids, args.iterations, true)?;
        let by_slot = tier.time_kernel(&ids, args.iterations, false)?;
        let dst = stream.alloc_zeros::<u8>(n * args.row_bytes)?;
        let (dst_ptr, _sync) = dst.device_ptr(&stream);
        let mut hit = Vec::new();
        let reps = (args.iterations / 5).max(3);
        tier.gather_to_device(&ids, dst_ptr, &mut hit)?;
        let t = Instant::now();
        for _ in 0..reps {
            tier.gather_to_device(&ids, dst_ptr, &mut hit)?;
        }
        let to_device = t.elapsed().as_secs_f64() / reps as f64;
        anyhow::ensure!(
            hit.iter().all(|&h| h),
            "every id is resident, yet some missed"
        );
        let mut host = vec![0u8; n * args.row_bytes];
        tier.gather_to_host(&ids, &mut host, &mut hit)?;
        let t = Instant::now();
        for _ in 0..reps {
            tier.gather_to_host(&ids, &mut host, &mut hit)?;
        }
        let to_host = t.elapsed().as_secs_f64() / reps as f64;
        println!(
            "{:<9} {:<21.3e} {:<22.3e} {:<22.3e} {:.3e}",
            n,
            n as f64 / hashed,
            n as f64 / by_slot,
            n as f64 / to_device,
            n as f64 / to_host
        );
    }
    Ok(())
}
