//! `engram-store cluster plan|show`: place a table (or an Engram group's layer tables) over
//! the live nodes as a new shard-map epoch, and print the map.

use std::time::Duration;

use clap::{Args, Subcommand};
use engram_store::cluster::{PlanArgs, plan, show};

/// `cluster` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// Split a table version into shards, place each on REPLICAS live nodes (rendezvous hashing
    /// weighted by capacity) and publish it as a new map epoch in one etcd transaction.
    Plan(PlanFlags),
    /// Print the shard map and the live nodes.
    Show(ShowFlags),
}

/// `cluster plan` flags.
#[derive(Debug, Args)]
pub(crate) struct PlanFlags {
    /// etcd endpoints, comma-separated.
    #[arg(long, value_delimiter = ',', required = true, value_name = "URL[,URL]")]
    pub(crate) etcd: Vec<String>,
    /// Table, or Engram group (its layer tables are placed, cut between hash columns).
    #[arg(long)]
    pub(crate) table: String,
    /// Shards per table.
    #[arg(long)]
    pub(crate) shards: u32,
    /// Replicas per shard (on distinct nodes).
    #[arg(long, default_value_t = 1)]
    pub(crate) replicas: u32,
    /// Table version to place [default: the newest a live node holds whole].
    #[arg(long)]
    pub(crate) version: Option<u64>,
    /// Place shards only on nodes that hold the version whole in their data directory (by
    /// default any live node may get a shard; one without it copies the shard's rows from a
    /// peer that holds them before it reports the shard ready).
    #[arg(long)]
    pub(crate) no_copy: bool,
    /// Seconds to wait for new replicas to be ready before dropping the ones they replace
    /// (0: leave the old ones listed as leaving).
    #[arg(long, default_value_t = 60)]
    pub(crate) wait: u64,
}

/// `cluster show` flags.
#[derive(Debug, Args)]
pub(crate) struct ShowFlags {
    /// etcd endpoints, comma-separated.
    #[arg(long, value_delimiter = ',', required = true, value_name = "URL[,URL]")]
    pub(crate) etcd: Vec<String>,
}

pub(crate) async fn run(c: ClusterCommand) -> anyhow::Result<()> {
    match c {
        ClusterCommand::Plan(f) => {
            let out = plan(
                &f.etcd,
                &PlanArgs {
                    table: f.table,
                    shards: f.shards,
                    replicas: f.replicas,
                    version: f.version,
                    wait: Duration::from_secs(f.wait),
                    copy_from_peers: !f.no_copy,
                },
            )
            .await?;
            for tm in &out.tables {
                println!(
                    "placed {} v{}: {} shard(s) x {} replica(s) at epoch {}",
                    tm.table,
                    tm.version,
                    tm.shards.len(),
                    tm.replicas,
                    out.epoch
                );
            }
            println!("{} shard(s) moved", out.moved);
            if let Some(e) = out.settled_epoch {
                println!("new replicas ready; replaced ones dropped at epoch {e}");
            }
            print!("{}", show(&f.etcd).await?);
            Ok(())
        }
        ClusterCommand::Show(f) => {
            print!("{}", show(&f.etcd).await?);
            Ok(())
        }
    }
}
