//! The `engram-store` binary: parses the command line ([`cli`]) and runs it; errors print and
//! exit with status 1. The demo and the `lookup` command drive a server through the client; the
//! server library (`engram_store`) holds no client code.

use clap::Parser;

mod cli;

/// mimalloc instead of glibc's malloc: the serving paths allocate and free many short-lived
/// buffers (responses, read batches), and glibc's free-list coalescing and per-thread arenas
/// cost CPU (about a tenth of the cold path) and resident memory that mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // engram-store's own info lines are its operational events (a table version
                // swapped in, a shutdown draining); everything else from warnings up.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,engram_store=info")),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: logs collected from a pipe (containers) stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    #[cfg(feature = "failpoints")]
    if let Err(e) = set_failpoints_from_env() {
        eprintln!("error: FAILPOINTS: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Fault injection (a build with `--features failpoints`): `FAILPOINTS='name=actions;...'` in the
/// `fail` crate's syntax, e.g. `FAILPOINTS='nvme_read_eio=5%return'`.
#[cfg(feature = "failpoints")]
fn set_failpoints_from_env() -> Result<(), String> {
    let Ok(spec) = std::env::var("FAILPOINTS") else {
        return Ok(());
    };
    for point in spec.split(';').filter(|p| !p.trim().is_empty()) {
        let (name, actions) = point
            .split_once('=')
            .ok_or_else(|| format!("{point:?} is not name=actions"))?;
        fail::cfg(name.trim(), actions.trim()).map_err(|e| format!("{name}: {e}"))?;
        eprintln!("failpoint {name} = {actions}");
    }
    Ok(())
}
