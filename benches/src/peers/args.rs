//! `engram-bench peers` flags and the checks that need more than one flag at a time.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, ensure};
use clap::Args;
use engram_store::size::parse_size;
use engram_store::table::DType;
use engram_store_driver::IdDistribution;

use crate::lookup::parse_seconds;

/// `peers` flags.
#[derive(Debug, Args)]
pub struct PeersArgs {
    /// The Redis to compare with: an empty instance of its own (`benches/run-peers.sh` starts
    /// one); the benchmark refuses a Redis that already holds keys.
    #[arg(long, value_name = "HOST:PORT")]
    pub redis: String,
    /// Rows in the table.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    /// Elements per row.
    #[arg(long, default_value_t = 80)]
    pub dim: u32,
    /// Element type: f32, f16, bf16, i8, u8, fp8_e4m3.
    #[arg(long, default_value = "bf16")]
    pub dtype: DType,
    /// Content seed of the synthetic rows (`engram_store::table::synth_row`).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Ids per request, comma-separated; each is measured on both systems.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,16,256,4096,65536",
        value_parser = parse_batch
    )]
    pub batch: Vec<usize>,
    /// Requests in flight, each client task on a connection of its own, for both systems.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Row ids: zipf:S, uniform or trace:FILE (LE u64 row ids); both systems get the same stream.
    #[arg(long, default_value = "zipf:0.8")]
    pub dist: IdDistribution,
    /// Measured time per system, batch size and run, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_seconds)]
    pub duration: Duration,
    /// Unmeasured load before each measured run.
    #[arg(long, default_value = "1s", value_parser = parse_seconds)]
    pub warmup: Duration,
    /// Runs per system and batch size, the systems taking turns; rows/s is the median of the
    /// runs, latency the histogram of all of them.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Data directory of the engram-store table [default: a temporary directory, removed
    /// afterwards]. A table there of the same name, shape and seed is reused.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Table name.
    #[arg(long, default_value = "peers")]
    pub table: String,
    /// The engram-store binary, run as a server process of its own so that its RSS is its own
    /// [default: `engram-store` next to this binary].
    #[arg(long, value_name = "PATH")]
    pub engram_bin: Option<PathBuf>,
    /// engram-store RAM tier budget, e.g. 512MiB [default: enough for the whole table].
    #[arg(long, value_parser = parse_size)]
    pub ram_cache: Option<u64>,
    /// Keys per MGET: a batch goes to Redis as one pipeline of MGETs of at most this many keys.
    #[arg(long, default_value_t = 4096, value_parser = parse_batch)]
    pub mget_chunk: usize,
    /// Keys per MSET while loading Redis.
    #[arg(long, default_value_t = 1000, value_parser = parse_batch)]
    pub load_chunk: usize,
    /// Random rows read from each system and checked in full after measuring (every row is
    /// checked in full once before).
    #[arg(long, default_value_t = 2000)]
    pub verify_sample: usize,
    /// During measured runs, check the first columns of every row of one response in this many.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    pub check_every: u64,
    /// Time of each limit measurement (loopback TCP; raw io_uring IOPS when the table does not
    /// fit the RAM tier).
    #[arg(long, default_value = "3s", value_parser = parse_seconds)]
    pub limit_duration: Duration,
    /// Reads in flight of the raw io_uring IOPS measurement.
    #[arg(long, default_value_t = 64)]
    pub iops_queue_depth: usize,
    /// Write the results as CSV here.
    #[arg(long, value_name = "OUT.csv")]
    pub csv: Option<PathBuf>,
    /// Write `peers-rows.svg` and `peers-latency.svg` into this directory.
    #[arg(long, value_name = "DIR")]
    pub plot_dir: Option<PathBuf>,
}

/// Parses a positive count.
pub fn parse_batch(s: &str) -> Result<usize, String> {
    match s.trim().replace('_', "").parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a positive integer")),
    }
}

impl PeersArgs {
    /// Checks what clap cannot check flag by flag.
    pub fn validate(&self) -> Result<()> {
        ensure!(self.rows > 0, "--rows must be at least 1");
        ensure!(self.dim > 0, "--dim must be at least 1");
        ensure!(!self.batch.is_empty(), "--batch needs at least one size");
        ensure!(self.concurrency > 0, "--concurrency must be at least 1");
        ensure!(self.runs > 0, "--runs must be at least 1");
        ensure!(!self.duration.is_zero(), "--duration must be positive");
        ensure!(
            engram_store::table::valid_table_name(&self.table),
            "--table {:?} is not a valid table name",
            self.table
        );
        Ok(())
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.dim as usize * self.dtype.size()
    }

    /// The batch sizes, ascending, each once.
    pub fn batches(&self) -> Vec<usize> {
        let mut b = self.batch.clone();
        b.sort_unstable();
        b.dedup();
        b
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        peers: PeersArgs,
    }

    fn parse(args: &[&str]) -> Result<PeersArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("peers").chain(args.iter().copied())).map(|c| c.peers)
    }

    #[test]
    fn defaults_are_the_documented_comparison() -> Result<()> {
        let a = parse(&["--redis", "127.0.0.1:6390"])?;
        a.validate()?;
        assert_eq!(a.redis, "127.0.0.1:6390");
        assert_eq!((a.rows, a.dim, a.dtype), (1_000_000, 80, DType::Bf16));
        assert_eq!(a.row_bytes(), 160);
        assert_eq!(a.batch, vec![1, 16, 256, 4096, 65536]);
        assert_eq!(a.concurrency, 8);
        assert_eq!(a.duration, Duration::from_secs(10));
        assert_eq!(a.runs, 1);
        assert!(matches!(a.dist, IdDistribution::Zipf(s) if (s - 0.8).abs() < 1e-12));
        assert!(a.csv.is_none() && a.plot_dir.is_none() && a.ram_cache.is_none());
        Ok(())
    }

    #[test]
    fn parses_the_ci_command_line() -> Result<()> {
        let a = parse(&[
            "--redis",
            "127.0.0.1:6390",
            "--rows",
            "20000",
            "--dim",
            "64",
            "--dtype",
            "f16",
            "--batch",
            "4096,16,16",
            "--concurrency",
            "4",
            "--duration",
            "1s",
            "--warmup",
            "500ms",
            "--ram-cache",
            "64MiB",
            "--csv",
            "out.csv",
            "--plot-dir",
            "plots",
        ])?;
        a.validate()?;
        assert_eq!(a.batches(), vec![16, 4096]);
        assert_eq!(
            (a.rows, a.dim, a.dtype, a.row_bytes()),
            (20000, 64, DType::F16, 128)
        );
        assert_eq!(a.concurrency, 4);
        assert_eq!(a.duration, Duration::from_secs(1));
        assert_eq!(a.warmup, Duration::from_millis(500));
        assert_eq!(a.ram_cache, Some(64 << 20));
        assert_eq!(a.csv, Some(PathBuf::from("out.csv")));
        assert_eq!(a.plot_dir, Some(PathBuf::from("plots")));
        Ok(())
    }

    #[test]
    fn rejects_bad_values() {
        assert!(parse(&[]).is_err(), "--redis is required");
        for bad in [
            &["--batch", "0"][..],
            &["--batch", "16,x"],
            &["--duration", "soon"],
            &["--dtype", "f64"],
            &["--dist", "zipf:-1"],
            &["--ram-cache", "12 parsecs"],
            &["--check-every", "0"],
        ] {
            let mut args = vec!["--redis", "127.0.0.1:6390"];
            args.extend_from_slice(bad);
            assert!(parse(&args).is_err(), "{bad:?} was accepted");
        }
        let zero_rows = parse(&["--redis", "r:1", "--rows", "0"]).map(|a| a.validate().is_err());
        assert!(matches!(zero_rows, Ok(true)));
        let bad_table = parse(&["--redis", "r:1", "--table", "a/b"]).map(|a| a.validate().is_err());
        assert!(matches!(bad_table, Ok(true)));
    }
}
