//! `engram-bench`: engram-store's benchmark and simulation tools, one subcommand each. This file
//! only parses the command line and dispatches; each subcommand lives in its own module of the
//! library.

use anyhow::Result;
use clap::{Parser, Subcommand};
use engram_store_bench::{
    abuse, alloc_meter::CountingAlloc, channel, cluster, import_hf, limits, lookup, ngrams,
    overload, peers, policy_sim,
};

/// Measured allocations: the policy simulator reads each policy's live heap from it.
#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// engram-store benchmarks and simulators.
#[derive(Debug, Parser)]
#[command(name = "engram-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Simulate cache policies on an Engram row-id trace: hit rate per policy and cache size.
    Policy(policy_sim::PolicyArgs),
    /// Drive Lookup load against a running server: rows/s, GB/s, latency, hit rate per tier.
    Lookup(lookup::LookupArgs),
    /// Offer several times the load a server sustains: admitted latency against unloaded,
    /// refusals (RESOURCE_EXHAUSTED) and their latency, the server's RSS against its bound.
    Overload(overload::OverloadArgs),
    /// LookupNgrams over a token trace against Lookup of the same row ids hashed here.
    Ngrams(ngrams::NgramsArgs),
    /// Measure this machine's limits: raw io_uring random-read IOPS on a file, loopback TCP.
    Limits(limits::LimitsArgs),
    /// The VRAM tier's gather kernel on a real GPU (built with --features cuda).
    #[cfg(feature = "cuda")]
    Gpu(engram_store_bench::gpu::GpuArgs),
    /// import-hf throughput on a synthetic V4.1 checkpoint against sequential disk writes.
    ImportHf(import_hf::ImportHfArgs),
    /// Compare with Redis on the same rows and requests, all in RAM, beside the machine's limits.
    Peers(peers::PeersArgs),
    /// Replay what hostile local clients could do against a live server: RSS and a bystander's
    /// p99 per scenario.
    Abuse(abuse::AbuseArgs),
    /// The sidecar channel against Lookup and LookupInto, same run: latency and rows/s.
    Channel(channel::ChannelArgs),
    /// Rows/s and latency through the cluster client over 1, 2, 4 nodes (etcd on loopback),
    /// the routing overhead against one node read directly, and failover after a kill -9.
    Cluster(cluster::ClusterArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Policy(args) => policy_sim::run(&args),
        Command::Lookup(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(lookup::run(&args)),
        Command::Overload(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(overload::run(&args)),
        Command::Ngrams(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(ngrams::run(&args))
            .map(drop),
        Command::Limits(args) => limits::run(&args),
        Command::ImportHf(args) => import_hf::run(&args),
        #[cfg(feature = "cuda")]
        Command::Gpu(args) => engram_store_bench::gpu::run(&args),
        Command::Peers(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(peers::run(&args)),
        Command::Channel(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(channel::run(&args))
            .map(drop),
        Command::Cluster(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(cluster::run(&args)),
        Command::Abuse(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(abuse::run(&args)),
    }
}
