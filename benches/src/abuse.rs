//! `engram-bench abuse`: replays what a hostile or careless client on the same host could do
//! against a live server (the scenarios are `engram_store_driver::abuse`'s) and prints, per
//! scenario, whether the server held, its RSS before and at its peak, and a bystander client's
//! p99 and failures.
//!
//! ```text
//! engram-bench abuse --addr 127.0.0.1:50051 [--table T] [--scenarios all] [--seconds 3]
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use engram_store_driver::abuse::AbuseConfig;

/// `abuse` flags.
#[derive(Debug, Clone, Args)]
pub struct AbuseArgs {
    /// Server address (TCP).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub addr: SocketAddr,
    /// Table to use [default: the first the server lists].
    #[arg(long)]
    pub table: Option<String>,
    /// Comma-separated scenarios, or `all`.
    #[arg(long, default_value = "all", value_delimiter = ',')]
    pub scenarios: Vec<String>,
    /// Seconds the timed scenarios run (path race, non-reading, idle connections).
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Rows per request of the flooding scenarios [default: the server's batch limit, at most
    /// 1,048,576].
    #[arg(long)]
    pub rows: Option<usize>,
    /// Connections of the non-reading and idle scenarios.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
}

/// Runs the scenarios; fails if the server did not hold in any.
pub async fn run(args: &AbuseArgs) -> anyhow::Result<()> {
    let config = AbuseConfig {
        addr: args.addr,
        table: args.table.clone(),
        scenarios: args.scenarios.clone(),
        duration: Duration::from_secs_f64(args.seconds.max(0.1)),
        rows: args.rows,
        connections: args.connections,
        protected: None,
    };
    let reports = engram_store_driver::abuse::run(&config).await?;
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| !r.finding.held)
        .map(|r| r.name.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("the server did not hold in: {}", failed.join(", "))
    }
}
