//! `engram-bench import-hf`: `import-hf` throughput on a synthetic DeepSeek-V4.1-geometry
//! checkpoint, against the disk's sequential write bandwidth measured in the same run.
//!
//! The run writes a scaled checkpoint (`--size` bytes of Engram tables), syncs it, then measures
//! the limit (write `--size` bytes sequentially to a file in the data directory's file system
//! through the page cache in 8 MiB writes and fsync, as the table writer writes), imports the
//! checkpoint, and measures the limit again. It prints both rates and their ratio; the import's
//! rate counts the bytes it wrote (rows, block padding, checksum files).

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

/// Runs the benchmark and prints its table.
pub fn run(args: &ImportHfArgs) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir)?;
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
    let imported = import_hf(&ckpt, "bench", &data, &ImportOptions::default(), None)?;
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
        "import-hf / disk sequential write = {:.2} (target >= 0.80)",
        import_rate / limit
    );
    let _ = std::fs::remove_dir_all(&args.dir);
    Ok(())
}
