//! `engram-bench limits`: what this machine allows, measured in the same run as the benchmark it
//! is compared with: raw io_uring random 4 KiB O_DIRECT read IOPS on a given file at a given queue
//! depth (no engram-store code in the path), and loopback TCP bandwidth between two threads.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use engram_store_cache::io::AlignedBuf;
use io_uring::{IoUring, opcode, types};
use rand::{Rng, SeedableRng};

/// `limits` flags.
#[derive(Debug, Args)]
pub struct LimitsArgs {
    /// File to read (e.g. a table's data file); at least a few GiB for a fair disk number.
    #[arg(long)]
    pub file: PathBuf,
    /// Reads in flight.
    #[arg(long, default_value_t = 64)]
    pub queue_depth: usize,
    /// Bytes per read.
    #[arg(long, default_value_t = 4096)]
    pub read_bytes: usize,
    /// Seconds of each measurement.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
}

/// Measured limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Random reads per second.
    pub iops: f64,
    /// Loopback TCP bytes per second (one stream).
    pub tcp_bytes_per_s: f64,
}

/// Random aligned reads of `read_bytes` over `path` through a bare io_uring at `queue_depth`.
pub fn uring_random_read_iops(
    path: &Path,
    queue_depth: usize,
    read_bytes: usize,
    seconds: f64,
) -> anyhow::Result<f64> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .with_context(|| format!("open {} with O_DIRECT", path.display()))?;
    let len = file.metadata()?.len();
    let blocks = len / read_bytes as u64;
    anyhow::ensure!(blocks > 0, "{} is smaller than one read", path.display());
    let qd = queue_depth.max(1);
    let mut ring = IoUring::new(qd.next_power_of_two() as u32)?;
    let mut bufs: Vec<AlignedBuf> = (0..qd)
        .map(|_| AlignedBuf::zeroed(read_bytes, 4096))
        .collect();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    let fd = types::Fd(file.as_raw_fd());
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut done = 0u64;
    let mut in_flight = 0usize;
    let submit = |ring: &mut IoUring,
                  slot: usize,
                  bufs: &mut [AlignedBuf],
                  rng: &mut rand::rngs::SmallRng|
     -> anyhow::Result<()> {
        let off = rng.random_range(0..blocks) * read_bytes as u64;
        let e = opcode::Read::new(fd, bufs[slot].as_mut_ptr(), read_bytes as u32)
            .offset(off)
            .build()
            .user_data(slot as u64);
        // SAFETY: bufs[slot] lives in `bufs` until the end of this function, after every
        // submitted read has been reaped, and each slot has at most one read in flight.
        unsafe { ring.submission().push(&e) }
            .map_err(|_| anyhow::anyhow!("submission queue full"))?;
        Ok(())
    };
    for slot in 0..qd {
        submit(&mut ring, slot, &mut bufs, &mut rng)?;
        in_flight += 1;
    }
    while in_flight > 0 {
        ring.submit_and_wait(1)?;
        let slots: Vec<(usize, i32)> = ring
            .completion()
            .map(|c| (c.user_data() as usize, c.result()))
            .collect();
        for (slot, res) in slots {
            in_flight -= 1;
            anyhow::ensure!(
                res >= 0,
                "read failed: {}",
                std::io::Error::from_raw_os_error(-res)
            );
            done += 1;
            if Instant::now() < deadline {
                submit(&mut ring, slot, &mut bufs, &mut rng)?;
                in_flight += 1;
            }
        }
    }
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

/// One TCP stream over loopback, 1 MiB writes, for `seconds`: bytes per second received.
pub fn loopback_tcp_bytes_per_s(seconds: f64) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<(u64, Duration)> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        let start = Instant::now();
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok((total, start.elapsed()));
            }
            total += n as u64;
        }
    });
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let buf = vec![7u8; 1 << 20];
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < deadline {
        s.write_all(&buf)?;
    }
    drop(s);
    let (total, elapsed) = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader thread panicked"))??;
    Ok(total as f64 / elapsed.as_secs_f64())
}

/// Measures both limits.
pub fn measure(args: &LimitsArgs) -> anyhow::Result<Limits> {
    let iops = uring_random_read_iops(&args.file, args.queue_depth, args.read_bytes, args.seconds)?;
    let tcp = loopback_tcp_bytes_per_s(args.seconds)?;
    Ok(Limits {
        iops,
        tcp_bytes_per_s: tcp,
    })
}

/// Runs `engram-bench limits` and prints the results.
pub fn run(args: &LimitsArgs) -> anyhow::Result<()> {
    let l = measure(args)?;
    println!("limits on this machine (same run):");
    println!(
        "  io_uring O_DIRECT random {} B reads, qd {}: {:.0} IOPS ({:.1} MB/s) on {}",
        args.read_bytes,
        args.queue_depth,
        l.iops,
        l.iops * args.read_bytes as f64 / 1e6,
        args.file.display()
    );
    println!(
        "  loopback TCP, one stream: {:.2} GB/s",
        l.tcp_bytes_per_s / 1e9
    );
    Ok(())
}
