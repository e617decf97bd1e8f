//! The `engram-store` command line (part of the binary, not the server library): serve, ingest,
//! synth, engram create, lookup and demo.

mod demo;
mod progress;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use self::progress::bytes_bar;

use engram_store::access::{Role, TlsFiles, TokenSet};
use engram_store::config::ServeConfig;
use engram_store::edge::EdgeOptions;
use engram_store::engine::Engine;
use engram_store::group::{GroupSource, create_group};
use engram_store::ingest::{SynthSpec, WriteOptions, ingest_file, synth_table};
use engram_store::metrics::{MetricsServer, StoreMetrics, spawn_metrics_server};
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
    Demo(demo::DemoArgs),
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
    /// RAM tier policy (default s3sketch). Without this flag, a table whose rows all fit its
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
    /// VRAM tier budget, e.g. 40GiB (needs a GPU and a build with --features cuda).
    #[arg(long)]
    pub(crate) gpu_budget: Option<String>,
    /// CUDA device of the VRAM tier.
    #[arg(long)]
    pub(crate) gpu_device: Option<usize>,
    /// Read through the page cache instead of O_DIRECT.
    #[arg(long)]
    pub(crate) buffered_io: bool,
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
        Command::Demo(a) => demo::run(a).await,
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
    let addr = resolve_listen(&c.listen).await?;
    let engine = Arc::new(Engine::open(c.engine_config()?)?);
    let (edge, _metrics_server) = edge_options(&c, &engine).await?;
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
    engram_store::server::serve_on_with(engine, listener, edge, async {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("shutting down");
    })
    .await
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
        let addr = resolve_addr("--metrics-listen", &c.metrics_listen).await?;
        let metrics = Arc::new(StoreMetrics::with_own_recorder()?);
        let running = spawn_metrics_server(metrics.clone(), engine.clone(), addr).await?;
        eprintln!("metrics on http://{}/metrics", running.addr);
        edge.metrics = Some(metrics);
        server = Some(running);
    }
    Ok((edge, server))
}

/// The address `--listen` names: `IP:PORT`, or `HOST:PORT` resolved (the first address).
async fn resolve_listen(listen: &str) -> anyhow::Result<SocketAddr> {
    resolve_addr("--listen", listen).await
}

/// The address a flag names: `IP:PORT`, or `HOST:PORT` resolved (the first address).
async fn resolve_addr(flag: &str, listen: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(addr) = listen.parse() {
        return Ok(addr);
    }
    let shape = || {
        anyhow::anyhow!(
            "{flag} {listen:?} is not an address like 127.0.0.1:50051 or localhost:50051"
        )
    };
    let (_, port) = listen.rsplit_once(':').ok_or_else(shape)?;
    port.parse::<u16>().map_err(|_| shape())?;
    let mut addrs = tokio::net::lookup_host(listen)
        .await
        .map_err(|e| anyhow::anyhow!("{flag} {listen:?}: cannot resolve the host: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| anyhow::anyhow!("{flag} {listen:?}: the host has no address"))
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
}
