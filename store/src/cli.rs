//! The `engram-store` command line: serve, ingest, synth, engram create, lookup and demo.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::ServeConfig;
use crate::engine::Engine;
use crate::group::{GroupSource, create_group};
use crate::ingest::{SynthSpec, WriteOptions, ingest_file, synth_table};
use crate::size::{format_size, parse_size};
use crate::table::{ChecksumKind, DType, row_as_f64};

/// engram-store: serves hashed n-gram (Engram) embedding tables over gRPC.
#[derive(Debug, Parser)]
#[command(name = "engram-store", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve every table in a data directory over gRPC.
    Serve(ServeArgs),
    /// Ingest a .npy or .safetensors file as a table.
    Ingest(IngestArgs),
    /// Write a synthetic table with documented deterministic content.
    Synth(SynthArgs),
    /// Engram groups: a layout, a compression map and one table per layer.
    #[command(subcommand)]
    Engram(EngramCommand),
    /// Look rows up on a running server and print them as numbers.
    Lookup(LookupArgs),
    /// Generate a demo table, serve it and drive a Zipf workload through the real client.
    Demo(crate::demo::DemoArgs),
}

/// `serve` flags (each overrides the config file).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Data directory (one subdirectory per table).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long)]
    pub listen: Option<String>,
    /// RAM tier budget, e.g. 4GiB (0 disables the RAM tier).
    #[arg(long)]
    pub ram_cache: Option<String>,
    /// RAM tier policy (default s3mini). Without this flag, a table whose rows all fit its
    /// share of the RAM budget is held whole, direct-mapped (policy "direct" in Stats).
    #[arg(long)]
    pub ram_policy: Option<String>,
    /// I/O engine: auto, io_uring or pread.
    #[arg(long)]
    pub io_engine: Option<String>,
    /// Reads in flight.
    #[arg(long)]
    pub queue_depth: Option<usize>,
    /// Most ids per request.
    #[arg(long)]
    pub max_batch_ids: Option<usize>,
    /// VRAM tier budget, e.g. 40GiB (needs a GPU and a build with --features cuda).
    #[arg(long)]
    pub gpu_budget: Option<String>,
    /// CUDA device of the VRAM tier.
    #[arg(long)]
    pub gpu_device: Option<usize>,
    /// Read through the page cache instead of O_DIRECT.
    #[arg(long)]
    pub buffered_io: bool,
    /// TOML configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Table writing flags shared by ingest and synth.
#[derive(Debug, Args)]
pub struct WriteArgs {
    /// I/O block size in bytes (a power of two >= 512).
    #[arg(long, default_value_t = 4096)]
    pub block_size: u32,
    /// Block checksum: crc32c or xxh3.
    #[arg(long, default_value = "crc32c")]
    pub checksum: ChecksumKind,
    /// Largest data file, e.g. 16GiB.
    #[arg(long, default_value = "16GiB", value_parser = parse_size)]
    pub file_size: u64,
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
pub struct IngestArgs {
    /// Input .npy (2-D, C order) or .safetensors file.
    pub input: PathBuf,
    /// Table name.
    #[arg(long)]
    pub name: String,
    /// Data directory.
    #[arg(long)]
    pub data: PathBuf,
    /// Tensor to take from a .safetensors file.
    #[arg(long)]
    pub tensor: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub write: WriteArgs,
}

/// `synth` flags.
#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Table name.
    #[arg(long)]
    pub name: String,
    /// Rows.
    #[arg(long)]
    pub rows: u64,
    /// Elements per row.
    #[arg(long)]
    pub dim: u32,
    /// Element type: f32, f16, bf16, i8, u8, fp8_e4m3.
    #[arg(long, default_value = "bf16")]
    pub dtype: DType,
    /// Data directory.
    #[arg(long)]
    pub data: PathBuf,
    /// Content seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub write: WriteArgs,
}

/// `engram` subcommands.
#[derive(Debug, Subcommand)]
pub enum EngramCommand {
    /// Create an Engram group: its layout and compression map under DATA/<name>.engram/, and a
    /// table <name>.layer<ID> per layer (rows = sum of the layer's primes, row_dim from the
    /// layout), synthetic or from a .safetensors file.
    Create(EngramCreateArgs),
}

/// `engram create` flags.
#[derive(Debug, Args)]
pub struct EngramCreateArgs {
    /// Group name; its tables are <name>.layer<ID>.
    #[arg(long)]
    pub name: String,
    /// Layout JSON (as written by `python -m engram_store.layout`).
    #[arg(long)]
    pub layout: PathBuf,
    /// Compression map .npy (raw token id -> compressed id).
    #[arg(long)]
    pub compress: PathBuf,
    /// Data directory.
    #[arg(long)]
    pub data: PathBuf,
    /// Fill the tables with synthetic content (documented in `synth`).
    #[arg(long, required_unless_present = "weights", conflicts_with = "weights")]
    pub synth: bool,
    /// Element type of synthetic tables: f32, f16, bf16, i8, u8, fp8_e4m3 [default: bf16].
    #[arg(long, conflicts_with = "weights")]
    pub dtype: Option<DType>,
    /// Content seed of synthetic tables [default: 0].
    #[arg(long, conflicts_with = "weights")]
    pub seed: Option<u64>,
    /// A .safetensors file with one 2-D tensor per layer, named layers.<ID>.engram.embedding
    /// or layer<ID>, of shape [sum of the layer's primes, row_dim]; the tables take its dtype.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub write: WriteArgs,
}

/// `lookup` flags.
#[derive(Debug, Args)]
pub struct LookupArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub addr: String,
    /// Table name.
    #[arg(long)]
    pub table: String,
    /// Comma-separated row ids.
    #[arg(long, value_delimiter = ',', required = true)]
    pub ids: Vec<u64>,
}

/// A bytes progress bar (hidden when stderr is not a terminal).
pub fn bytes_bar(msg: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(msg.to_owned());
    bar
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(a) => serve(a).await,
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
        Command::Lookup(a) => lookup(a).await,
        Command::Demo(a) => crate::demo::run(a).await,
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
    if a.buffered_io {
        c.direct_io = false;
    }
    let addr: SocketAddr = c.listen.parse().map_err(|e| {
        anyhow::anyhow!(
            "--listen {:?} is not an address like 127.0.0.1:50051: {e}",
            c.listen
        )
    })?;
    let engine = Arc::new(Engine::open(c.engine_config()?)?);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("listen on {addr}: {e}"))?;
    eprintln!(
        "engram-store serving {} table(s) from {} on {} (io: {}, RAM cache {})",
        engine.tables().count(),
        c.data.display(),
        listener.local_addr()?,
        engine.io_engine_name(),
        c.ram_cache
    );
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
    crate::server::serve_on(engine, listener, async {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("shutting down");
    })
    .await
}

async fn lookup(a: LookupArgs) -> anyhow::Result<()> {
    let client = engram_store_client::Client::builder(&a.addr)
        .connect_timeout(Duration::from_secs(3))
        .retries(1)
        .connect()
        .await?;
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
