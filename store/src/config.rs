//! `engram-store serve` configuration: a `#[serde(default)]` TOML file (`--config FILE.toml`),
//! overridden by command-line flags. Every field has a default, so an empty file is valid.
//!
//! ```toml
//! data = "./data"
//! listen = "0.0.0.0:50051"
//! ram_cache = "4GiB"
//! ram_policy = "clock"
//! io_engine = "auto"      # auto | io_uring | pread
//! queue_depth = 128
//! direct_io = true
//! max_batch_ids = 1048576
//! gpu_budget = "0"      # per device, e.g. "40GiB" (builds with --features cuda)
//! gpu_device = 0        # or a list, gpu_device = [0, 1]: a VRAM tier on each
//! gpu_refresh_ms = 1000 # how often each VRAM tier takes in the rows now hottest (50-600000)
//! gpu_refresh_min_rows = 0  # a refresh wanting fewer rows waits (at most 10 periods in a row)
//! gpu_weights = { "v41.layer1" = 2.0 }  # VRAM split by data bytes x weight (default 1)
//! local_socket = "/run/engram-store.local"   # "" for none
//! max_connections = 256
//! max_concurrent_streams = 32
//! idle_timeout_s = 60
//! answer_budget = "1GiB"
//! prefetch_queue_rows = 4194304
//! max_regions_per_connection = 64
//! max_regions = 1024
//! metrics_listen = "0.0.0.0:9090"   # Prometheus text on /metrics ("": off)
//! tls_cert = "/etc/engram-store/tls.crt"   # with tls_key: TLS ("": off)
//! tls_key = "/etc/engram-store/tls.key"
//! tls_client_ca = "/etc/engram-store/ca.crt" # mutual TLS: clients need a cert from this CA
//! auth_tokens = "/etc/engram-store/tokens"  # read:TOKEN / admin:TOKEN lines ("": no tokens)
//! max_rows_in_flight = 2097152   # beyond: RESOURCE_EXHAUSTED at once
//! keep_versions = 2       # versions of each table kept (served + pinnable older ones)
//! watch_interval_s = 2    # looks for new table versions (0: only on Reload)
//! shutdown_grace_s = 10   # SIGTERM: time for the requests in flight
//! etcd = ["http://10.0.0.5:2379"]   # join a cluster ([]: standalone)
//! node_id = "store-0"               # unique in the cluster
//! advertise = "10.0.0.7:50051"      # where clients reach this node
//! route = false                     # forward parts this node does not serve
//! lease_ttl_s = 5                   # a dead node leaves the cluster after this
//! warm_rows = 4096                  # rows of a new shard warmed before it is ready
//! peer_ca = "/etc/engram-store/ca.crt"      # peers over TLS (forwarding, shard copies)
//! peer_cert = "/etc/engram-store/peer.crt"  # with peer_key: this node's client certificate
//! peer_key = "/etc/engram-store/peer.key"
//! peer_token_file = "/etc/engram-store/peer-token"  # token sent to peers (admin: copies)
//! share_memory = "/dev/shm"  # tables held whole in RAM live in a file there (ShareTable)
//! ```
//!
//! `gpu_device` takes one device ordinal (`0`, as `--gpu-device 0`) or a list of them (`[0, 1]`,
//! as `--gpu-device 0,1`); each device listed gets its own VRAM tier of every table under its
//! own `gpu_budget`. An empty list or a device listed twice is refused when the file is read.
//!
//! `gpu_weights` maps table names to weights on the VRAM budget (as `--gpu-weight TABLE=W`),
//! inline as above or as a `[gpu_weights]` table at the end of the file; each weight is a
//! positive finite number, and a table not named weighs 1. A `--gpu-weight` flag overrides the
//! file's weight of the table it names and keeps the others. The RAM budget is split by data
//! bytes alone.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::engine::{EngineConfig, GpuDevices, GpuWeights};
use crate::server::ServerOptions;
use crate::size::parse_size;

/// The range `gpu_refresh_ms` may take, in milliseconds: a refresh ranks the tier's counts and
/// patches its index, so not more often than 20 times a second, and at least every 10 minutes.
const GPU_REFRESH_MS: std::ops::RangeInclusive<u64> = 50..=600_000;

/// The `serve` configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// Data directory.
    pub data: PathBuf,
    /// Listen address.
    pub listen: String,
    /// RAM tier budget, e.g. "4GiB".
    pub ram_cache: String,
    /// RAM tier policy name (empty: the default).
    pub ram_policy: String,
    /// auto, io_uring or pread.
    pub io_engine: String,
    /// Reads in flight.
    pub queue_depth: usize,
    /// O_DIRECT reads.
    pub direct_io: bool,
    /// Most ids per request.
    pub max_batch_ids: usize,
    /// VRAM tier budget of each device, e.g. "40GiB" ("0": none; needs a build with --features
    /// cuda).
    pub gpu_budget: String,
    /// CUDA devices with a VRAM tier: a number or a list of numbers.
    pub gpu_device: GpuDevices,
    /// Weights of tables on the VRAM budget, table name to weight (a positive finite number;
    /// tables not named weigh 1): each device's budget is split by data bytes times weight.
    pub gpu_weights: GpuWeights,
    /// Milliseconds between a VRAM tier's refreshes (taking in the rows now hottest, each
    /// patching the tier's index where the rows changed), 50 to 600,000.
    pub gpu_refresh_ms: u64,
    /// A background refresh wanting fewer rows than this waits for the next period, at most
    /// ten periods in a row (0: every refresh with rows to bring in runs).
    pub gpu_refresh_min_rows: u64,
    /// Path of the local socket for memfd regions ("": none).
    pub local_socket: String,
    /// Connections open at once, at most.
    pub max_connections: usize,
    /// Concurrent requests per connection.
    pub max_concurrent_streams: u32,
    /// Seconds a connection with nothing in flight stays open (one holding a region or channel
    /// registered through it stays open until its client closes it).
    pub idle_timeout_s: u64,
    /// Bytes of answers in flight, at most, e.g. "1GiB".
    pub answer_budget: String,
    /// Rows of prefetches queued or running, at most.
    pub prefetch_queue_rows: usize,
    /// Regions one connection may hold.
    pub max_regions_per_connection: usize,
    /// Regions the server holds in all.
    pub max_regions: usize,
    /// Address of the Prometheus `/metrics` endpoint ("": none).
    pub metrics_listen: String,
    /// PEM certificate chain of the gRPC listener (with `tls_key`: TLS on).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the gRPC listener.
    pub tls_key: Option<PathBuf>,
    /// PEM CA that client certificates must chain to (mutual TLS).
    pub tls_client_ca: Option<PathBuf>,
    /// Token file, `read:TOKEN` or `admin:TOKEN` per line (none: no token checked).
    pub auth_tokens: Option<PathBuf>,
    /// Rows of requests admitted and not yet answered, at most.
    pub max_rows_in_flight: usize,
    /// Versions of each table kept open and on disk.
    pub keep_versions: usize,
    /// Seconds between looks for new table versions (0: never).
    pub watch_interval_s: f64,
    /// Seconds a shutdown waits for the requests in flight.
    pub shutdown_grace_s: f64,
    /// etcd endpoints of the cluster to join (empty: standalone).
    pub etcd: Vec<String>,
    /// This node's id in the cluster.
    pub node_id: String,
    /// Address clients reach this node at ("": the listen address).
    pub advertise: String,
    /// Forward the parts of plain requests this node does not serve.
    pub route: bool,
    /// Seconds of the node's etcd lease.
    pub lease_ttl_s: u64,
    /// Rows of a new shard warmed before it is reported ready.
    pub warm_rows: u64,
    /// PEM CA of the peers' certificates: the node reaches its peers over TLS.
    pub peer_ca: Option<PathBuf>,
    /// PEM client certificate chain the node shows its peers (mutual TLS), with `peer_key`.
    pub peer_cert: Option<PathBuf>,
    /// PEM key of `peer_cert`.
    pub peer_key: Option<PathBuf>,
    /// File holding the token the node sends its peers (an admin one: shard copies).
    pub peer_token_file: Option<PathBuf>,
    /// Directory of a memory file system where tables held whole in RAM keep their rows as one
    /// shared-memory file that local workers map (ShareTable); none: not shared.
    pub share_memory: Option<PathBuf>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            data: PathBuf::from("./data"),
            listen: "127.0.0.1:50051".into(),
            ram_cache: "1GiB".into(),
            ram_policy: String::new(),
            io_engine: "auto".into(),
            queue_depth: 128,
            direct_io: true,
            max_batch_ids: 1 << 20,
            gpu_budget: "0".into(),
            gpu_device: GpuDevices::default(),
            gpu_weights: GpuWeights::default(),
            gpu_refresh_ms: 1000,
            gpu_refresh_min_rows: 0,
            local_socket: String::new(),
            max_connections: 256,
            max_concurrent_streams: 32,
            idle_timeout_s: 60,
            answer_budget: "1GiB".into(),
            prefetch_queue_rows: 1 << 22,
            max_regions_per_connection: 64,
            max_regions: 1024,
            metrics_listen: String::new(),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            auth_tokens: None,
            max_rows_in_flight: 1 << 21,
            keep_versions: 2,
            watch_interval_s: 2.0,
            shutdown_grace_s: 10.0,
            etcd: Vec::new(),
            node_id: String::new(),
            advertise: String::new(),
            route: false,
            lease_ttl_s: 5,
            warm_rows: 4096,
            peer_ca: None,
            peer_cert: None,
            peer_key: None,
            peer_token_file: None,
            share_memory: None,
        }
    }
}

impl ServeConfig {
    /// Reads a TOML file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("read config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))
    }

    /// The engine configuration it describes.
    pub fn engine_config(&self) -> anyhow::Result<EngineConfig> {
        let mut c = EngineConfig::new(&self.data);
        c.ram_cache_bytes = parse_size(&self.ram_cache).map_err(anyhow::Error::msg)?;
        c.ram_policy = (!self.ram_policy.is_empty()).then(|| self.ram_policy.clone());
        c.io_engine = self.io_engine.parse().map_err(anyhow::Error::msg)?;
        c.queue_depth = self.queue_depth.max(1);
        c.direct_io = self.direct_io;
        if self.max_batch_ids == 0 {
            anyhow::bail!("max_batch_ids must be at least 1");
        }
        c.max_batch_ids = self.max_batch_ids;
        c.gpu_budget_bytes = parse_size(&self.gpu_budget).map_err(anyhow::Error::msg)?;
        c.gpu_devices = self.gpu_device.clone();
        c.gpu_weights = self.gpu_weights.clone();
        if !GPU_REFRESH_MS.contains(&self.gpu_refresh_ms) {
            anyhow::bail!(
                "gpu_refresh_ms {} is out of range: give {} to {} milliseconds",
                self.gpu_refresh_ms,
                GPU_REFRESH_MS.start(),
                GPU_REFRESH_MS.end()
            );
        }
        c.gpu_refresh = std::time::Duration::from_millis(self.gpu_refresh_ms);
        c.gpu_refresh_min_rows = usize::try_from(self.gpu_refresh_min_rows).unwrap_or(usize::MAX);
        c.answer_budget_bytes = parse_size(&self.answer_budget).map_err(anyhow::Error::msg)?;
        c.prefetch_queue_rows = self.prefetch_queue_rows.max(1);
        c.max_regions_per_connection = self.max_regions_per_connection;
        c.max_regions = self.max_regions;
        if self.max_rows_in_flight == 0 || self.keep_versions == 0 {
            anyhow::bail!("max_rows_in_flight and keep_versions must be at least 1");
        }
        c.max_rows_in_flight = self.max_rows_in_flight;
        c.keep_versions = self.keep_versions;
        c.version_watch = seconds("watch_interval_s", self.watch_interval_s)?;
        if let Some(dir) = &self.share_memory {
            if !dir.is_dir() {
                anyhow::bail!(
                    "share_memory {} is not a directory (a memory file system such as /dev/shm)",
                    dir.display()
                );
            }
            c.share_memory_dir = Some(dir.clone());
        }
        Ok(c)
    }

    /// The cluster membership it describes (none without `etcd`).
    pub fn cluster_options(&self) -> anyhow::Result<Option<crate::cluster::ClusterOptions>> {
        if self.etcd.is_empty() {
            return Ok(None);
        }
        if self.node_id.is_empty() {
            anyhow::bail!("--etcd needs --node-id (a name unique in the cluster)");
        }
        let advertise = if self.advertise.is_empty() {
            if self.listen.starts_with("0.0.0.0:") || self.listen.starts_with("[::]:") {
                anyhow::bail!(
                    "--etcd with --listen {} needs --advertise HOST:PORT (where clients reach \
                     this node)",
                    self.listen
                );
            }
            self.listen.clone()
        } else {
            self.advertise.clone()
        };
        let mut o =
            crate::cluster::ClusterOptions::new(self.etcd.clone(), self.node_id.clone(), advertise);
        o.route = self.route;
        o.lease_ttl = std::time::Duration::from_secs(self.lease_ttl_s.max(1));
        o.warm_rows = self.warm_rows;
        o.security = self.peer_security()?;
        Ok(Some(o))
    }

    /// TLS and token of the node's connections to its peers, read from their files.
    fn peer_security(&self) -> anyhow::Result<engram_store_client::Security> {
        let read = |what: &str, path: &Path| {
            std::fs::read(path).map_err(|e| anyhow::anyhow!("read {what} {}: {e}", path.display()))
        };
        let mut s = engram_store_client::Security::default();
        if let Some(p) = &self.peer_ca {
            s.tls_ca_pem = Some(read("--peer-ca", p)?);
        }
        match (&self.peer_cert, &self.peer_key) {
            (Some(c), Some(k)) => {
                s.tls_identity_pem = Some((read("--peer-cert", c)?, read("--peer-key", k)?));
            }
            (None, None) => {}
            _ => anyhow::bail!("--peer-cert and --peer-key go together"),
        }
        if s.tls_identity_pem.is_some() && s.tls_ca_pem.is_none() {
            anyhow::bail!("--peer-cert needs --peer-ca (the CA of the peers' certificates)");
        }
        if let Some(p) = &self.peer_token_file {
            let text = String::from_utf8(read("--peer-token-file", p)?)
                .map_err(|_| anyhow::anyhow!("--peer-token-file {} is not UTF-8", p.display()))?;
            let token = text.trim();
            if token.is_empty() {
                anyhow::bail!("--peer-token-file {} is empty", p.display());
            }
            s.token = Some(token.to_string());
        }
        Ok(s)
    }

    /// The server options it describes.
    pub fn server_options(&self) -> anyhow::Result<ServerOptions> {
        if self.max_connections == 0 || self.max_concurrent_streams == 0 {
            anyhow::bail!("max_connections and max_concurrent_streams must be at least 1");
        }
        Ok(ServerOptions {
            max_connections: self.max_connections,
            max_concurrent_streams: self.max_concurrent_streams,
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout_s.max(1)),
            local_socket: (!self.local_socket.is_empty())
                .then(|| PathBuf::from(&self.local_socket)),
            shutdown_grace: seconds("shutdown_grace_s", self.shutdown_grace_s)?,
            ..ServerOptions::default()
        })
    }
}

/// A non-negative number of seconds as a duration.
fn seconds(key: &str, s: f64) -> anyhow::Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(s)
        .map_err(|_| anyhow::anyhow!("{key} = {s}: not a number of seconds >= 0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_defaults_and_unknown_fields_fail() {
        let c: ServeConfig = toml::from_str("").expect("empty config");
        assert_eq!(c.queue_depth, 128);
        let c: ServeConfig =
            toml::from_str("ram_cache = \"2GiB\"\nio_engine = \"pread\"").expect("config");
        let e = c.engine_config().expect("engine config");
        assert_eq!(e.ram_cache_bytes, 2 << 30);
        assert!(toml::from_str::<ServeConfig>("ram_cahce = \"1GiB\"").is_err());
        let c: ServeConfig = toml::from_str(
            "metrics_listen = \"127.0.0.1:9090\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n\
             tls_client_ca = \"ca.pem\"\nauth_tokens = \"tokens\"",
        )
        .expect("production keys");
        assert_eq!(c.metrics_listen, "127.0.0.1:9090");
        assert_eq!(c.tls_client_ca.as_deref(), Some(Path::new("ca.pem")));
        assert_eq!(c.auth_tokens.as_deref(), Some(Path::new("tokens")));
        let c: ServeConfig = toml::from_str(
            "max_rows_in_flight = 5000\nkeep_versions = 3\nwatch_interval_s = 0.5\n\
             shutdown_grace_s = 30",
        )
        .expect("overload, version and shutdown keys");
        let e = c.engine_config().expect("engine config");
        assert_eq!((e.max_rows_in_flight, e.keep_versions), (5000, 3));
        assert_eq!(e.version_watch, std::time::Duration::from_millis(500));
        assert_eq!(
            e.gpu_refresh,
            std::time::Duration::from_secs(1),
            "the default refresh"
        );
        let r: ServeConfig = toml::from_str("gpu_refresh_ms = 5000").expect("refresh key");
        let refresh = r.engine_config().expect("engine config").gpu_refresh;
        assert_eq!(refresh, std::time::Duration::from_secs(5));
        assert_eq!(c.engine_config().expect("engine").gpu_refresh_min_rows, 0);
        let r: ServeConfig = toml::from_str("gpu_refresh_min_rows = 4096").expect("min rows key");
        let e = r.engine_config().expect("engine config");
        assert_eq!(e.gpu_refresh_min_rows, 4096);
        for bad in [0, 49, 600_001] {
            let r: ServeConfig = toml::from_str(&format!("gpu_refresh_ms = {bad}")).expect("key");
            let e = r.engine_config().expect_err("out of range");
            assert!(
                e.to_string().contains(&format!("gpu_refresh_ms {bad} ")),
                "{e}"
            );
        }
        let o = c.server_options().expect("server options");
        assert_eq!(o.shutdown_grace, std::time::Duration::from_secs(30));
        let c: ServeConfig = toml::from_str("shutdown_grace_s = -1").expect("parses");
        assert!(c.server_options().is_err(), "a negative grace is refused");
        let c: ServeConfig = toml::from_str("gpu_device = 1").expect("one GPU device");
        assert_eq!(
            c.engine_config().expect("engine").gpu_devices.as_slice(),
            &[1]
        );
        let c: ServeConfig = toml::from_str("gpu_device = [0, 1]").expect("GPU devices");
        assert_eq!(
            c.engine_config().expect("engine").gpu_devices.as_slice(),
            &[0, 1]
        );
        let e = toml::from_str::<ServeConfig>("gpu_device = [0, 0]").expect_err("a duplicate");
        assert!(e.to_string().contains("listed twice"), "{e}");
        let c: ServeConfig =
            toml::from_str("[gpu_weights]\n\"v41.layer1\" = 2.0").expect("GPU weights");
        let weights = c.engine_config().expect("engine").gpu_weights;
        assert_eq!(weights.weight("v41.layer1"), 2.0);
        assert_eq!(
            weights.weight("v41.layer14"),
            1.0,
            "a table not named weighs 1"
        );
        let e = toml::from_str::<ServeConfig>("gpu_weights = { t = 0 }").expect_err("zero");
        assert!(e.to_string().contains("weight 0 of table \"t\""), "{e}");
        let c: ServeConfig = toml::from_str("keep_versions = 0").expect("parses");
        assert!(
            c.engine_config().is_err(),
            "keep_versions must be at least 1"
        );
    }
}
