//! Kami benchmarks: programs that start Kami, load it, and print their figures.
//! They never fail on a timing; they exit non-zero only when something did not work
//! (a server that would not start, a verification that did not hold).
//!
//! ```text
//! cargo run --release -p kami-bench -- core [--backend sqlite|postgres|both] [--codes N]
//!     [--orders-seconds S] [--connections C] [--kami PATH] [--postgres-url URL] [--json PATH]
//! cargo run --release -p kami-bench -- flash-sale [--backend …] [--codes N] [--connections C]
//!     [--read-seconds S] [--sold-out-seconds S] [--redis URL] [--order-rate R] [--notify-rate R]
//!     [--url http://HOST:PORT --api-key KEY --sandbox-secret SECRET]
//! ```

mod admin;
mod load;
mod report;
mod scenarios;
mod server;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};

use server::Backend;

#[derive(Parser)]
#[command(
    name = "kami-bench",
    about = "Benchmarks for Kami (they print figures; they never fail on a timing)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Import, healthz ceiling, order creation, sandbox payment and peak RSS, per backend.
    Core(scenarios::core::CoreArgs),
    /// A drop: ceiling, product reads, orders until sold out, sold-out traffic, and a
    /// notification storm, then a check that nothing was oversold, duplicated or undelivered.
    FlashSale(scenarios::flash_sale::FlashArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    Sqlite,
    Postgres,
    Both,
}

impl BackendChoice {
    pub fn backends(self) -> Vec<Backend> {
        match self {
            BackendChoice::Sqlite => vec![Backend::Sqlite],
            BackendChoice::Postgres => vec![Backend::Postgres],
            BackendChoice::Both => vec![Backend::Sqlite, Backend::Postgres],
        }
    }
}

/// Options every scenario takes.
#[derive(Args, Clone, Debug)]
pub struct CommonArgs {
    /// Which database backend(s) to run against.
    #[arg(long, value_enum, default_value = "both")]
    pub backend: BackendChoice,

    /// Concurrent keep-alive connections of the closed-loop load generator.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,

    /// The Kami binary [default: target/release/kami].
    #[arg(long)]
    pub kami: Option<PathBuf>,

    /// An existing PostgreSQL database used to create and drop the benchmark's own database.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub postgres_url: String,

    /// Also write the figures as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Worker threads of the load generator (it shares the machine with the server).
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,

    /// Keep each run's temporary directory (database, server log) and PostgreSQL database.
    #[arg(long)]
    pub keep: bool,
}

impl CommonArgs {
    /// `--kami`, or `target/release/kami` under the current directory, `CARGO_TARGET_DIR` or
    /// this workspace.
    pub fn kami_path(&self) -> PathBuf {
        if let Some(p) = &self.kami {
            return p.clone();
        }
        let mut candidates = vec![PathBuf::from("target/release/kami")];
        if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
            candidates.push(PathBuf::from(dir).join("release/kami"));
        }
        candidates.push(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../target/release/kami"
        )));
        candidates
            .iter()
            .find(|p| p.exists())
            .cloned()
            .unwrap_or_else(|| candidates[0].clone())
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Core(a) => a.common.client_threads,
        Command::FlashSale(a) => a.common.client_threads,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    let ok = rt.block_on(async {
        match cli.command {
            Command::Core(args) => scenarios::core::run(args).await,
            Command::FlashSale(args) => scenarios::flash_sale::run(args).await,
        }
    })?;
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
