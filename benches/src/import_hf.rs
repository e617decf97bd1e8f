//! `engram-bench import-hf`: `import-hf` throughput on a synthetic DeepSeek-V4.1-geometry
//! checkpoint, against the disk's sequential write bandwidth measured in the same run.
//!
//! The run writes a scaled checkpoint (`--size` bytes of Engram tables), syncs it, then measures
//! the limit (write `--size` bytes sequentially to a file in the data directory's file system
//! through the page cache in 8 MiB writes and fsync, as the table writer writes), reads the
//! checkpoint once so that its pages are cached (a real import reads from another device than it
//! writes to; here both are one disk), imports the checkpoint, and measures the limit again. It
//! prints both rates and their ratio, and how many bytes the import read from storage (from
//! `/proc/self/io`: non-zero when the page cache could not hold the checkpoint, and then the
//! import shares the disk between reading and writing). The import's rate counts the bytes it
//! wrote (rows, block padding, checksum files).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use engram_store::group::hf::{
    ImportOptions, SynthCheckpoint, import_hf, write_synthetic_checkpoint,
};
use engram_store::size::{format_size, parse_size};

/// `import-hf` flags.
#[derive(Debug, Args)]
pub struct ImportHfArgs {
    /// Scratch directory (checkpoint, data directory and the bandwidth probe go under it; it
    /// is emptied first and at the end).
    #[arg(long)]
    pub dir: PathBuf,
    /// Bytes of Engram tables in the checkpoint, e.g. 4GiB.
    #[arg(long, default_value = "4GiB", value_parser = parse_size)]
    pub size: u64,
}

/// Sequential buffered writes of `bytes` to a new file under `dir`, then fsync: bytes per second.
fn sequential_write(dir: &Path, bytes: u64) -> anyhow::Result<f64> {
    let path = dir.join("seq-write-probe.bin");
    let chunk = vec![0x5Au8; 8 << 20];
    let start = Instant::now();
    let mut f = File::create(&path).with_context(|| format!("create {}", path.display()))?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    let rate = bytes as f64 / start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(rate)
}

/// `read_bytes` of `/proc/self/io`: bytes this process made storage read (0 elsewhere).
fn storage_read_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("read_bytes: "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Reads every file under `dir` once (into the page cache).
fn warm(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let mut f = File::open(&path)?;
        std::io::copy(&mut f, &mut std::io::sink())?;
    }
    Ok(())
}

/// Bytes of all files under `dir`.
fn du(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => du(&e.path()),
                    _ => e.metadata().map_or(0, |m| m.len()),
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Runs the benchmark and prints its table; the scratch directory is removed afterwards, also
/// on failure.
pub fn run(args: &ImportHfArgs) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir)?;
    let result = measure(args);
    let _ = std::fs::remove_dir_all(&args.dir);
    result
}

fn measure(args: &ImportHfArgs) -> anyhow::Result<()> {
    let ckpt = args.dir.join("ckpt");
    let data = args.dir.join("data");
    let t = Instant::now();
    let written = write_synthetic_checkpoint(&ckpt, &SynthCheckpoint::scaled(args.size))
        .map_err(anyhow::Error::msg)?;
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    println!(
        "checkpoint: layers {:?}, rows {:?}, {} of Engram tensors, written in {:.1} s",
        written.config.layer_ids,
        written.config.num_embeddings,
        format_size(written.engram_bytes),
        t.elapsed().as_secs_f64()
    );
    let before = sequential_write(&args.dir, args.size)?;
    warm(&ckpt)?;
    let read_before = storage_read_bytes();
    let cpu_before = cpu_seconds();
    let imported = import_hf(&ckpt, "bench", &data, &ImportOptions::default(), None)?;
    let read_from_storage = storage_read_bytes() - read_before;
    let import_cpu = cpu_seconds() - cpu_before;
    let secs = imported.elapsed.as_secs_f64();
    let on_disk = du(&data);
    let after = sequential_write(&args.dir, args.size)?;
    let limit = (before + after) / 2.0;
    let import_rate = on_disk as f64 / secs;
    println!(
        "disk sequential write (limit): {:.0} MB/s before, {:.0} MB/s after, mean {:.0} MB/s",
        before / 1e6,
        after / 1e6,
        limit / 1e6
    );
    println!(
        "import-hf: {} of rows ({} on disk with block padding and checksums) in {secs:.2} s: \
         {:.0} MB/s of rows, {:.0} MB/s written",
        format_size(imported.row_bytes_written),
        format_size(on_disk),
        imported.row_bytes_written as f64 / secs / 1e6,
        import_rate / 1e6
    );
    println!(
        "import-hf read {} of the checkpoint from storage (the rest from the page cache), used \
         {import_cpu:.1} CPU s in {secs:.1} s",
        format_size(read_from_storage)
    );
    println!(
        "import-hf / disk sequential write = {:.2} (target >= 0.80)",
        import_rate / limit
    );
    Ok(())
}
