//! The `engram-store` command line (part of the binary, not the server library): serve, ingest,
//! synth, engram create, import-hf, synth-hf, lookup and demo.

mod cluster;
mod demo;
mod progress;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use self::progress::bytes_bar;

use engram_store::access::{Role, TlsFiles, TokenSet};
use engram_store::config::ServeConfig;
use engram_store::edge::EdgeOptions;
use engram_store::engine::{Engine, GpuDevices, GpuWeight, GpuWeights};
use engram_store::group::hf::{self, ImportOptions, SynthCheckpoint};
use engram_store::group::{GroupSource, create_group};
use engram_store::ingest::{SynthSpec, WriteOptions, ingest_file, synth_table};
use engram_store::metrics::{MetricsServer, StoreMetrics, spawn_metrics_server};
use engram_store::server::ListenAddr;
use engram_store::size::{format_size, parse_size};
use engram_store::table::{ChecksumKind, DType, row_as_f64};

/// engram-store: serves hashed n-gram (Engram) embedding tables over gRPC.
#[derive(Debug, Parser)]
#[command(name = "engram-store", version, about)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Serve every table in a data directory over gRPC.
    Serve(Box<ServeArgs>),
    /// Ingest a .npy or .safetensors file as a table.
    Ingest(IngestArgs),
    /// Write a synthetic table with documented deterministic content.
    Synth(SynthArgs),
    /// Engram groups: a layout, a compression map and one table per layer.
    #[command(subcommand)]
    Engram(EngramCommand),
    /// Import a DeepSeek-V4.1 Hugging Face checkpoint's Engram tables as an Engram group: one
    /// table G.layer<L> per Engram layer (fp8 e4m3 rows with their ue8m0 block scales, 264 B),
    /// the layout from config.json and the compression map from tokenizer.json.
    ImportHf(ImportHfArgs),
    /// Write a synthetic DeepSeek-V4.1-geometry checkpoint (config.json, tokenizer.json, index,
    /// shards with the Engram tensors beside unrelated ones) for tests and benchmarks.
    SynthHf(SynthHfArgs),
    /// Look rows up on a running server and print them as numbers.
    Lookup(LookupArgs),
    /// Generate a demo table, serve it and drive a Zipf workload through the real client.
    Demo(demo::DemoArgs),
    /// A cluster of nodes coordinated through etcd: place tables, show the map.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
}

/// `serve` flags (each overrides the config file).
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Data directory (one subdirectory per table).
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long)]
    pub(crate) listen: Option<String>,
    /// RAM tier budget, e.g. 4GiB (0 disables the RAM tier).
    #[arg(long)]
    pub(crate) ram_cache: Option<String>,
    /// RAM tier policy (default s3mini). Without this flag, a table whose rows all fit its
    /// share of the RAM budget is held whole, direct-mapped (policy "direct" in Stats).
    #[arg(long)]
    pub(crate) ram_policy: Option<String>,
    /// I/O engine: auto, io_uring or pread.
    #[arg(long)]
    pub(crate) io_engine: Option<String>,
    /// Reads in flight.
    #[arg(long)]
    pub(crate) queue_depth: Option<usize>,
    /// Most ids per request.
    #[arg(long)]
    pub(crate) max_batch_ids: Option<usize>,
    /// VRAM tier budget of each device in --gpu-device, e.g. 40GiB (needs a GPU and a build
    /// with --features cuda).
    #[arg(long)]
    pub(crate) gpu_budget: Option<String>,
    /// CUDA devices with a VRAM tier, e.g. 0 or 0,1,2,3: each gets its own tier of every table
    /// under its own --gpu-budget, filled with the rows asked for into buffers on it [default 0].
    #[arg(long, value_name = "N[,N...]")]
    pub(crate) gpu_device: Option<GpuDevices>,
    /// Weight of TABLE on the VRAM budget (repeatable; W a positive number, default 1): each
    /// device's --gpu-budget is split among tables by data bytes times weight, e.g.
    /// v41.layer1=2 for the layer-1 table, whose rows are needed after one layer of compute.
    /// The RAM budget is split by data bytes alone.
    #[arg(long, value_name = "TABLE=W")]
    pub(crate) gpu_weight: Vec<GpuWeight>,
    /// Milliseconds between a VRAM tier's refreshes, which take in the rows now hottest and
    /// patch the tier's index where the rows changed (50 to 600000) [default 1000].
    #[arg(long, value_name = "MS")]
    pub(crate) gpu_refresh_ms: Option<u64>,
    /// A background refresh of a VRAM tier that would bring in fewer rows than N waits for the
    /// next period, at most ten periods in a row: small drift in the counts is taken in later,
    /// in fewer device writes beside the model; a warm or a shift in the traffic at once
    /// [default 0: every refresh with rows to bring in runs].
    #[arg(long, value_name = "N")]
    pub(crate) gpu_refresh_min_rows: Option<u64>,
    /// Read through the page cache instead of O_DIRECT.
    #[arg(long)]
    pub(crate) buffered_io: bool,
    /// Path of the local Unix socket where clients on this host hand over sealed memfds as
    /// shared-memory regions [default with --listen unix:P: P.local; else none].
    #[arg(long)]
    pub(crate) local_socket: Option<PathBuf>,
    /// Connections open at once, at most [default 256].
    #[arg(long)]
    pub(crate) max_connections: Option<usize>,
    /// Seconds a connection with no request in flight stays open, unless it holds a region or
    /// channel registered through it [default 60].
    #[arg(long)]
    pub(crate) idle_timeout: Option<u64>,
    /// Bytes of answers built and not yet sent, at most, e.g. 1GiB [default 1GiB].
    #[arg(long)]
    pub(crate) answer_budget: Option<String>,
    /// Requests in flight on one connection (HTTP/2 concurrent streams) [default 32].
    #[arg(long)]
    pub(crate) max_concurrent_streams: Option<u32>,
    /// Rows of requests admitted and not yet answered, over all connections; a request beyond
    /// it is refused at once with RESOURCE_EXHAUSTED [default 2097152].
    #[arg(long)]
    pub(crate) max_rows_in_flight: Option<usize>,
    /// Versions of each table kept (served, and older ones clients may pin); older versions'
    /// files are removed once no request reads them [default 2].
    #[arg(long)]
    pub(crate) keep_versions: Option<usize>,
    /// Seconds between looks at the data directory for new table versions, 0 for never (the
    /// Reload RPC still looks at once) [default 2].
    #[arg(long, value_name = "SECONDS")]
    pub(crate) watch_interval: Option<f64>,
    /// Seconds a shutdown (SIGTERM, Ctrl-C) waits for the requests in flight [default 10].
    #[arg(long, value_name = "SECONDS")]
    pub(crate) shutdown_grace: Option<f64>,
    /// Serve Prometheus metrics on http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_listen: Option<String>,
    /// PEM certificate chain: serve gRPC over TLS (with --tls-key).
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_key: Option<PathBuf>,
    /// PEM CA: clients must present a certificate it signed (mutual TLS).
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_client_ca: Option<PathBuf>,
    /// Token file, one `read:TOKEN` or `admin:TOKEN` per line; every RPC but health and
    /// reflection then needs `authorization: Bearer TOKEN`.
    #[arg(long, value_name = "FILE")]
    pub(crate) auth_tokens: Option<PathBuf>,
    /// Join the cluster whose etcd is at these endpoints (comma-separated http://HOST:2379).
    #[arg(long, value_delimiter = ',', value_name = "URL[,URL]")]
    pub(crate) etcd: Option<Vec<String>>,
    /// This node's id in the cluster (unique; in Kubernetes, the pod name).
    #[arg(long, value_name = "ID")]
    pub(crate) node_id: Option<String>,
    /// Where clients reach this node, HOST:PORT [default: --listen].
    #[arg(long, value_name = "ADDR")]
    pub(crate) advertise: Option<String>,
    /// Forward the parts of a request that this node does not serve to ready replicas (so
    /// grpcurl and clients without the map work, at the cost of a hop).
    #[arg(long)]
    pub(crate) route: bool,
    /// Seconds of the node's etcd lease: a node that dies leaves the cluster after this
    /// [default 5].
    #[arg(long, value_name = "SECS")]
    pub(crate) lease_ttl: Option<u64>,
    /// Rows of each new shard warmed before the node reports it ready [default 4096].
    #[arg(long, value_name = "N")]
    pub(crate) warm_rows: Option<u64>,
    /// PEM CA of the other nodes' certificates: reach them over TLS (forwarding with --route,
    /// shard copies).
    #[arg(long, value_name = "FILE")]
    pub(crate) peer_ca: Option<PathBuf>,
    /// PEM client certificate chain shown to peers that require one (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "peer_key")]
    pub(crate) peer_cert: Option<PathBuf>,
    /// PEM key of --peer-cert.
    #[arg(long, value_name = "FILE", requires = "peer_cert")]
    pub(crate) peer_key: Option<PathBuf>,
    /// File holding the token sent to peers (an admin token: copying a shard reads table
    /// files with ReadTableFile).
    #[arg(long, value_name = "FILE")]
    pub(crate) peer_token_file: Option<PathBuf>,
    /// Tables held whole in RAM keep their rows in one shared-memory file in DIR (a memory
    /// file system), which a worker on this host maps with the VRAM tier (ShareTable) to read
    /// rows with its own kernels [default DIR: /dev/shm].
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "/dev/shm")]
    pub(crate) share_memory: Option<PathBuf>,
    /// TOML configuration file.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
}

/// Table writing flags shared by ingest and synth.
#[derive(Debug, Args)]
pub(crate) struct WriteArgs {
    /// I/O block size in bytes (a power of two >= 512).
    #[arg(long, default_value_t = 4096)]
    pub(crate) block_size: u32,
    /// Block checksum: crc32c or xxh3.
    #[arg(long, default_value = "crc32c")]
    pub(crate) checksum: ChecksumKind,
    /// Largest data file, e.g. 16GiB.
    #[arg(long, default_value = "16GiB", value_parser = parse_size)]
    pub(crate) file_size: u64,
}

impl WriteArgs {
    fn options(&self) -> WriteOptions {
        WriteOptions {
            block_size: self.block_size,
            checksum: self.checksum,
            max_file_bytes: self.file_size,
        }
    }
}

/// `ingest` flags.
#[derive(Debug, Args)]
pub(crate) struct IngestArgs {
    /// Input .npy (2-D, C order) or .safetensors file.
    pub(crate) input: PathBuf,
    /// Table name.
    #[arg(long)]
    pub(crate) name: String,
    /// Data directory.
    #[arg(long)]
    pub(crate) data: PathBuf,
    /// Tensor to take from a .safetensors file.
    #[arg(long)]
    pub(crate) tensor: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub(crate) write: WriteArgs,
}

/// `synth` flags.
#[derive(Debug, Args)]
pub(crate) struct SynthArgs {
    /// Table name.
    #[arg(long)]
    pub(crate) name: String,
    /// Rows.
    #[arg(long)]
    pub(crate) rows: u64,
    /// Elements per row.
    #[arg(long)]
    pub(crate) dim: u32,
    /// Element type: f32, f16, bf16, i8, u8, fp8_e4m3.
    #[arg(long, default_value = "bf16")]
    pub(crate) dtype: DType,
    /// Data directory.
    #[arg(long)]
    pub(crate) data: PathBuf,
    /// Content seed.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub(crate) write: WriteArgs,
}

/// `engram` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum EngramCommand {
    /// Create an Engram group: its layout and compression map under DATA/<name>.engram/, and a
    /// table <name>.layer<ID> per layer (rows = sum of the layer's primes, row_dim from the
    /// layout), synthetic or from a .safetensors file.
    Create(EngramCreateArgs),
}

/// `engram create` flags.
#[derive(Debug, Args)]
pub(crate) struct EngramCreateArgs {
    /// Group name; its tables are <name>.layer<ID>.
    #[arg(long)]
    pub(crate) name: String,
    /// Layout JSON (as written by `python -m engram_store.layout`).
    #[arg(long)]
    pub(crate) layout: PathBuf,
    /// Compression map .npy (raw token id -> compressed id).
    #[arg(long)]
    pub(crate) compress: PathBuf,
    /// Data directory.
    #[arg(long)]
    pub(crate) data: PathBuf,
    /// Fill the tables with synthetic content (documented in `synth`).
    #[arg(long, required_unless_present = "weights", conflicts_with = "weights")]
    pub(crate) synth: bool,
    /// Element type of synthetic tables: f32, f16, bf16, i8, u8, fp8_e4m3 [default: bf16].
    #[arg(long, conflicts_with = "weights")]
    pub(crate) dtype: Option<DType>,
    /// Content seed of synthetic tables [default: 0].
    #[arg(long, conflicts_with = "weights")]
    pub(crate) seed: Option<u64>,
    /// A .safetensors file with one 2-D tensor per layer, named layers.<ID>.engram.embedding
    /// or layer<ID>, of shape [sum of the layer's primes, row_dim]; the tables take its dtype.
    #[arg(long)]
    pub(crate) weights: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub(crate) write: WriteArgs,
}

/// `import-hf` flags.
#[derive(Debug, Args)]
pub(crate) struct ImportHfArgs {
    /// The checkpoint directory: config.json, model.safetensors.index.json and its shards,
    /// tokenizer.json.
    pub(crate) ckpt_dir: PathBuf,
    /// Group name; its tables are <name>.layer<L>.
    #[arg(long)]
    pub(crate) name: String,
    /// Data directory.
    #[arg(long)]
    pub(crate) data: PathBuf,
    /// The tokenizer.json to build the compression map from [default: CKPT_DIR/tokenizer.json].
    #[arg(long)]
    pub(crate) tokenizer: Option<PathBuf>,
    /// Engram layers to import, comma-separated [default: every layer of engram_layer_ids].
    #[arg(long, value_delimiter = ',')]
    pub(crate) layers: Option<Vec<u32>>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub(crate) write: WriteArgs,
}

/// `synth-hf` flags.
#[derive(Debug, Args)]
pub(crate) struct SynthHfArgs {
    /// Directory to write the checkpoint into.
    pub(crate) out_dir: PathBuf,
    /// Bytes of Engram tables in all, e.g. 4GiB [default: tiny, about 800 KiB].
    #[arg(long, value_parser = parse_size)]
    pub(crate) size: Option<u64>,
    /// engram_layer_ids, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,14")]
    pub(crate) layers: Vec<u32>,
}

/// `lookup` flags.
#[derive(Debug, Args)]
pub(crate) struct LookupArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub(crate) addr: String,
    /// Table name.
    #[arg(long)]
    pub(crate) table: String,
    /// Comma-separated row ids.
    #[arg(
        long,
        value_delimiter = ',',
        required = true,
        allow_hyphen_values = true,
        value_parser = parse_row_id
    )]
    pub(crate) ids: Vec<u64>,
    /// PEM CA of a TLS server (the address then means https://).
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_ca: Option<PathBuf>,
    /// PEM client certificate, for a server that requires one (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// File holding the bearer token to send (kept out of the process list).
    #[arg(long, value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,
}

/// Runs the parsed command.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(a) => serve(*a).await,
        Command::Ingest(a) => {
            let bar = bytes_bar("ingest");
            let m = ingest_file(
                &a.input,
                &a.name,
                &a.data,
                a.tensor.as_deref(),
                &a.write.options(),
                Some(&bar),
            )?;
            bar.finish_and_clear();
            println!(
                "ingested {} as table {:?} version {}: {} rows x {} {} ({})",
                a.input.display(),
                m.name,
                m.version,
                m.rows,
                m.row_dim,
                m.dtype,
                format_size(m.data_bytes())
            );
            Ok(())
        }
        Command::Synth(a) => {
            let bar = bytes_bar("synth");
            let spec = SynthSpec {
                name: a.name.clone(),
                rows: a.rows,
                row_dim: a.dim,
                dtype: a.dtype,
                seed: a.seed,
            };
            let m = synth_table(&a.data, &spec, &a.write.options(), Some(&bar))?;
            bar.finish_and_clear();
            println!(
                "wrote table {:?} version {}: {} rows x {} {} ({}) in {}",
                m.name,
                m.version,
                m.rows,
                m.row_dim,
                m.dtype,
                format_size(m.data_bytes()),
                a.data.join(&m.name).display()
            );
            Ok(())
        }
        Command::Engram(EngramCommand::Create(a)) => engram_create(a),
        Command::ImportHf(a) => import_hf(a),
        Command::SynthHf(a) => synth_hf(a),
        Command::Lookup(a) => lookup(a).await,
        Command::Demo(a) => demo::run(a).await,
        Command::Cluster(c) => cluster::run(c).await,
    }
}

fn engram_create(a: EngramCreateArgs) -> anyhow::Result<()> {
    let source = match &a.weights {
        Some(path) => GroupSource::Weights(path.clone()),
        None => GroupSource::Synth {
            dtype: a.dtype.unwrap_or(DType::Bf16),
            seed: a.seed.unwrap_or(0),
        },
    };
    // Say what will be written before writing it (a layout can ask for gigabytes).
    if let GroupSource::Synth { dtype, .. } = &source
        && let Ok(text) = std::fs::read_to_string(&a.layout)
        && let Ok(layout) = engram_store_hashing::Layout::from_json_str(&text)
    {
        let rows: u64 = layout.layers().iter().map(|l| l.row_count()).sum();
        let bytes = rows * (layout.row_dim() * dtype.size()) as u64;
        println!(
            "writing {} table(s), {rows} rows x {} {dtype} in all ({}), into {}",
            layout.layers().len(),
            layout.row_dim(),
            format_size(bytes),
            a.data.display()
        );
    }
    let bar = bytes_bar("engram create");
    let created = create_group(
        &a.data,
        &a.name,
        &a.layout,
        &a.compress,
        &source,
        &a.write.options(),
        Some(&bar),
    )?;
    bar.finish_and_clear();
    let layout = &created.layout;
    println!(
        "created Engram group {:?} in {}: {} layer(s), {} heads x {} per position, compression \
         map of {} raw ids -> {} compressed ids",
        a.name,
        created.dir.display(),
        created.tables.len(),
        layout.heads_total(),
        layout.row_dim(),
        created.map_len,
        layout.compressed_vocab_size()
    );
    for (m, layer) in created.tables.iter().zip(layout.layers()) {
        println!(
            "  layer {}: table {:?} v{}: {} rows x {} {} ({})",
            layer.layer_id(),
            m.name,
            m.version,
            m.rows,
            m.row_dim,
            m.dtype,
            format_size(m.data_bytes())
        );
    }
    Ok(())
}

fn import_hf(a: ImportHfArgs) -> anyhow::Result<()> {
    let options = ImportOptions {
        tokenizer: a.tokenizer.clone(),
        layers: a.layers.clone(),
        write: a.write.options(),
    };
    let bar = bytes_bar("import-hf");
    let imported = hf::import_hf(&a.ckpt_dir, &a.name, &a.data, &options, Some(&bar))?;
    bar.finish_and_clear();
    let layout = &imported.layout;
    let secs = imported.elapsed.as_secs_f64();
    println!(
        "imported {} as Engram group {:?} in {}: {} layer(s), {} columns x {} fp8 + {} ue8m0 \
         scales per position, compression map of {} raw ids -> {} compressed ids",
        a.ckpt_dir.display(),
        a.name,
        imported.dir.display(),
        imported.tables.len(),
        layout.heads_total(),
        layout.row_dim(),
        layout.row_dim() / hf::SCALE_BLOCK as usize,
        imported.map_len,
        layout.compressed_vocab_size()
    );
    for (m, layer) in imported.tables.iter().zip(layout.layers()) {
        println!(
            "  layer {}: table {:?} v{}: {} rows x {} B ({}, {})",
            layer.layer_id(),
            m.name,
            m.version,
            m.rows,
            m.row_bytes,
            m.row_format,
            format_size(m.data_bytes())
        );
    }
    println!(
        "{} of rows in {secs:.2} s: {:.1} MB/s",
        format_size(imported.row_bytes_written),
        imported.row_bytes_written as f64 / secs.max(1e-9) / 1e6
    );
    Ok(())
}

fn synth_hf(a: SynthHfArgs) -> anyhow::Result<()> {
    let mut spec = match a.size {
        Some(bytes) => SynthCheckpoint::scaled(bytes),
        None => SynthCheckpoint::default(),
    };
    spec.layer_ids = a.layers;
    let written = hf::write_synthetic_checkpoint(&a.out_dir, &spec).map_err(anyhow::Error::msg)?;
    println!(
        "wrote a synthetic V4.1 checkpoint in {}: layers {:?}, rows {:?}, {} of Engram tensors, \
         tokenizer of {} ids ({} compressed)",
        written.dir.display(),
        written.config.layer_ids,
        written.config.num_embeddings,
        format_size(written.engram_bytes),
        written.vocab,
        written.config.compressed_vocab_size
    );
    Ok(())
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let mut c = match &a.config {
        Some(p) => ServeConfig::load(p)?,
        None => ServeConfig::default(),
    };
    if let Some(v) = a.data {
        c.data = v;
    }
    if let Some(v) = a.listen {
        c.listen = v;
    }
    if let Some(v) = a.ram_cache {
        c.ram_cache = v;
    }
    if let Some(v) = a.ram_policy {
        c.ram_policy = v;
    }
    if let Some(v) = a.io_engine {
        c.io_engine = v;
    }
    if let Some(v) = a.queue_depth {
        c.queue_depth = v;
    }
    if let Some(v) = a.max_batch_ids {
        c.max_batch_ids = v;
    }
    if let Some(v) = a.gpu_budget {
        c.gpu_budget = v;
    }
    if let Some(v) = a.gpu_device {
        c.gpu_device = v;
    }
    let gpu_weights =
        GpuWeights::new(a.gpu_weight).map_err(|e| anyhow::anyhow!("--gpu-weight: {e}"))?;
    c.gpu_weights.override_with(gpu_weights);
    if a.buffered_io {
        c.direct_io = false;
    }
    if let Some(v) = a.local_socket {
        c.local_socket = v.display().to_string();
    }
    if let Some(v) = a.gpu_refresh_ms {
        c.gpu_refresh_ms = v;
    }
    if let Some(v) = a.gpu_refresh_min_rows {
        c.gpu_refresh_min_rows = v;
    }
    if let Some(v) = a.max_connections {
        c.max_connections = v;
    }
    if let Some(v) = a.idle_timeout {
        c.idle_timeout_s = v;
    }
    if let Some(v) = a.answer_budget {
        c.answer_budget = v;
    }
    if let Some(v) = a.max_concurrent_streams {
        c.max_concurrent_streams = v;
    }
    if let Some(v) = a.max_rows_in_flight {
        c.max_rows_in_flight = v;
    }
    if let Some(v) = a.keep_versions {
        c.keep_versions = v;
    }
    if let Some(v) = a.watch_interval {
        c.watch_interval_s = v;
    }
    if let Some(v) = a.shutdown_grace {
        c.shutdown_grace_s = v;
    }
    if let Some(v) = a.etcd {
        c.etcd = v;
    }
    if let Some(v) = a.node_id {
        c.node_id = v;
    }
    if let Some(v) = a.advertise {
        c.advertise = v;
    }
    if a.route {
        c.route = true;
    }
    if let Some(v) = a.lease_ttl {
        c.lease_ttl_s = v;
    }
    if let Some(v) = a.warm_rows {
        c.warm_rows = v;
    }
    if a.peer_ca.is_some() {
        c.peer_ca = a.peer_ca;
    }
    if a.peer_cert.is_some() {
        c.peer_cert = a.peer_cert;
        c.peer_key = a.peer_key;
    }
    if a.peer_token_file.is_some() {
        c.peer_token_file = a.peer_token_file;
    }
    if a.share_memory.is_some() {
        c.share_memory = a.share_memory;
    }
    let listen = ListenAddr::resolve(&c.listen).await?;
    if c.local_socket.is_empty()
        && let ListenAddr::Unix(path) = &listen
    {
        c.local_socket = format!("{}.local", path.display());
    }
    if let Some(v) = a.metrics_listen {
        c.metrics_listen = v;
    }
    for (flag, key) in [
        (a.tls_cert, &mut c.tls_cert),
        (a.tls_key, &mut c.tls_key),
        (a.tls_client_ca, &mut c.tls_client_ca),
        (a.auth_tokens, &mut c.auth_tokens),
    ] {
        if flag.is_some() {
            *key = flag;
        }
    }
    let mut options = c.server_options()?;
    let engine = Arc::new(Engine::open(c.engine_config()?)?);
    let (edge, _metrics_server) = edge_options(&c, &engine).await?;
    options.edge = edge;
    let listener = listen.bind()?;
    for path in engine.removed_leftovers() {
        eprintln!(
            "removed {}: a version a crashed ingest left half-written",
            path.display()
        );
    }
    eprintln!(
        "engram-store serving {} table(s) from {} on {} (io: {}, RAM cache {})",
        engine.tables().count(),
        c.data.display(),
        listener.addr(),
        engine.io_engine_name(),
        c.ram_cache
    );
    if let Some(path) = &options.local_socket {
        eprintln!("  local socket (memfd regions): {}", path.display());
    }
    for u in engine.unavailable() {
        eprintln!("  NOT SERVED: {} {}: {}", u.kind, u.name, u.error);
    }
    for t in engine.tables() {
        let m = t.manifest();
        eprintln!(
            "  {} v{}: {} rows x {} {}",
            m.name, m.version, m.rows, m.row_dim, m.dtype
        );
    }
    for g in engine.groups() {
        let layers: Vec<String> = g.layers().map(|l| l.layer_id().to_string()).collect();
        eprintln!(
            "  Engram group {}: layers [{}], {} heads x {} per position",
            g.name(),
            layers.join(", "),
            g.layout().heads_total(),
            g.layout().row_dim()
        );
    }
    if let Some(cluster) = c.cluster_options()? {
        eprintln!(
            "  cluster: node {} at {} (etcd {}, lease {} s{})",
            cluster.node_id,
            cluster.advertise,
            cluster.etcd.join(","),
            cluster.lease_ttl.as_secs(),
            if cluster.route { ", routing" } else { "" }
        );
        options.cluster = Some(engram_store::cluster::ClusterNode::start(
            engine.clone(),
            cluster,
        ));
    }
    let grace = options.shutdown_grace;
    engram_store::server::serve(engine, listener, options, async move {
        let signal = termination().await;
        eprintln!(
            "{signal}: shutting down (health NOT_SERVING, no new connections, up to {:.1}s for \
             the requests in flight)",
            grace.as_secs_f64()
        );
    })
    .await?;
    eprintln!("engram-store stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT), naming it.
async fn termination() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("warning: SIGTERM cannot be caught ({e}); only Ctrl-C shuts down gracefully");
            let _ = tokio::signal::ctrl_c().await;
            return "Ctrl-C";
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
    }
}

/// TLS, tokens and metrics as `c` says; the metrics endpoint, if any, runs until dropped.
async fn edge_options(
    c: &ServeConfig,
    engine: &Arc<Engine>,
) -> anyhow::Result<(EdgeOptions, Option<MetricsServer>)> {
    let mut edge = EdgeOptions {
        tls: TlsFiles::from_flags(
            c.tls_cert.clone(),
            c.tls_key.clone(),
            c.tls_client_ca.clone(),
        )?,
        ..Default::default()
    };
    if let Some(tls) = &edge.tls {
        eprintln!(
            "TLS on ({}){}",
            tls.cert.display(),
            if tls.client_ca.is_some() {
                ", client certificates required"
            } else {
                ""
            }
        );
    }
    if let Some(path) = &c.auth_tokens {
        let tokens = TokenSet::load(path)?;
        eprintln!(
            "tokens required: {} read, {} admin ({})",
            tokens.count(Role::Read),
            tokens.count(Role::Admin),
            path.display()
        );
        edge.tokens = Some(Arc::new(tokens));
    }
    let mut server = None;
    if !c.metrics_listen.is_empty() {
        let ListenAddr::Tcp(addr) = ListenAddr::resolve(&c.metrics_listen).await? else {
            anyhow::bail!("--metrics-listen takes a TCP address, not a Unix socket");
        };
        let metrics = Arc::new(StoreMetrics::with_own_recorder()?);
        let running = spawn_metrics_server(metrics.clone(), engine.clone(), addr).await?;
        eprintln!("metrics on http://{}/metrics", running.addr);
        edge.metrics = Some(metrics);
        server = Some(running);
    }
    Ok((edge, server))
}

/// A row id of `lookup --ids`.
fn parse_row_id(s: &str) -> Result<u64, String> {
    s.trim().parse::<u64>().map_err(|_| {
        if s.trim().starts_with('-') {
            format!("row ids are non-negative integers, got {s}")
        } else {
            format!("{s:?} is not a row id (a non-negative integer)")
        }
    })
}

async fn lookup(a: LookupArgs) -> anyhow::Result<()> {
    let read =
        |p: &PathBuf| std::fs::read(p).map_err(|e| anyhow::anyhow!("read {}: {e}", p.display()));
    let mut builder = engram_store_client::Client::builder(&a.addr)
        .connect_timeout(Duration::from_secs(3))
        .retries(1);
    if let Some(ca) = &a.tls_ca {
        builder = builder.tls_ca_pem(read(ca)?);
    }
    if let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) {
        builder = builder.tls_identity_pem(read(cert)?, read(key)?);
    }
    if let Some(path) = &a.token_file {
        let text = String::from_utf8(read(path)?)
            .map_err(|_| anyhow::anyhow!("{}: the token is not text", path.display()))?;
        builder = builder.token(text.trim());
    }
    let client = builder.connect().await?;
    let info = client.describe_table(&a.table).await?;
    let dtype = DType::ALL
        .into_iter()
        .find(|d| d.to_proto() as i32 == info.dtype)
        .ok_or_else(|| anyhow::anyhow!("server reported unknown dtype {}", info.dtype))?;
    let rows = client.lookup(&a.table, &a.ids).await?;
    for (id, row) in a.ids.iter().zip(rows.iter()) {
        let vals = row_as_f64(dtype, row);
        let text: Vec<String> = vals.iter().map(|v| format!("{v}")).collect();
        println!("{id}: [{}]", text.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Cli;

    #[test]
    fn engram_create_needs_exactly_one_source() {
        let base = [
            "engram-store",
            "engram",
            "create",
            "--name",
            "g",
            "--layout",
            "l.json",
            "--compress",
            "m.npy",
            "--data",
            "d",
        ];
        let with = |extra: &[&str]| Cli::try_parse_from(base.iter().chain(extra).copied());
        assert!(with(&[]).is_err(), "neither --synth nor --weights");
        assert!(with(&["--synth", "--weights", "w.safetensors"]).is_err());
        assert!(with(&["--weights", "w.safetensors", "--dtype", "f32"]).is_err());
        assert!(with(&["--synth", "--dtype", "f16", "--seed", "3"]).is_ok());
        assert!(with(&["--weights", "w.safetensors"]).is_ok());
    }

    #[test]
    fn negative_row_ids_are_refused_with_a_reason() {
        let parse = |ids: &str| {
            Cli::try_parse_from(["engram-store", "lookup", "--table", "t", "--ids", ids])
        };
        let err = parse("-1").expect_err("negative id");
        assert!(
            err.to_string().contains("row ids are non-negative"),
            "{err}"
        );
        assert!(parse("1,5,9").is_ok());
    }

    #[test]
    fn gpu_device_takes_a_list_and_names_a_bad_value() {
        let parse = |devices: &str| {
            Cli::try_parse_from(["engram-store", "serve", "--gpu-device", devices]).map(|cli| {
                match cli.command {
                    super::Command::Serve(a) => a.gpu_device.map(|d| d.as_slice().to_vec()),
                    _ => None,
                }
            })
        };
        assert_eq!(parse("0").expect("one device"), Some(vec![0]));
        assert_eq!(
            parse("0,1,2,3").expect("four devices"),
            Some(vec![0, 1, 2, 3])
        );
        for (bad, says) in [
            ("0,0", "GPU device 0 is listed twice in \"0,0\""),
            ("x", "GPU device \"x\""),
            ("0,,1", "empty item"),
            ("1,y", "\"y\" in \"1,y\""),
        ] {
            let err = parse(bad).expect_err(bad).to_string();
            assert!(err.contains(says), "{bad}: {err}");
            assert!(err.contains("--gpu-device"), "{bad}: {err}");
        }
    }

    #[test]
    fn gpu_weight_is_repeatable_and_names_a_bad_value() {
        let parse = |weights: &[&str]| {
            let flags = weights.iter().flat_map(|w| ["--gpu-weight", w]);
            Cli::try_parse_from(["engram-store", "serve"].into_iter().chain(flags)).map(|cli| {
                match cli.command {
                    super::Command::Serve(a) => a
                        .gpu_weight
                        .iter()
                        .map(|w| (w.table().to_string(), w.weight()))
                        .collect(),
                    _ => Vec::new(),
                }
            })
        };
        assert_eq!(parse(&[]).expect("none"), []);
        assert_eq!(
            parse(&["v41.layer1=2", "v41.layer14=0.5"]).expect("two weights"),
            [("v41.layer1".into(), 2.0), ("v41.layer14".into(), 0.5)]
        );
        for (bad, says) in [
            ("v41.layer1", "\"v41.layer1\" has no '='"),
            ("=2", "\"=2\" names no table"),
            ("t=two", "weight \"two\" of table \"t\" is not a number"),
            (
                "t=0",
                "weight 0 of table \"t\" is not a positive finite number",
            ),
            (
                "t=-2",
                "weight -2 of table \"t\" is not a positive finite number",
            ),
            (
                "t=nan",
                "weight NaN of table \"t\" is not a positive finite number",
            ),
            (
                "t=inf",
                "weight inf of table \"t\" is not a positive finite number",
            ),
        ] {
            let err = parse(&[bad]).expect_err(bad).to_string();
            assert!(err.contains(says), "{bad}: {err}");
            assert!(err.contains("--gpu-weight"), "{bad}: {err}");
        }
    }
}
