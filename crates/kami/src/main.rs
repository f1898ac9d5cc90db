//! `kami`: the one binary. Subcommands share configuration and migrate the
//! database before doing anything else.

mod commands;
mod config;
mod master_key;

use clap::{Parser, Subcommand};

use crate::config::{Config, Flags};

#[derive(Parser)]
#[command(
    name = "kami",
    version,
    about = "Self-hosted automatic card-key delivery"
)]
struct Cli {
    #[command(flatten)]
    flags: Flags,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the shop: storefront, API, payment callbacks and workers.
    Serve {
        /// Seed a clearly marked demo product and turn on sandbox payments.
        #[arg(long)]
        demo: bool,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Manage admin API keys.
    ApiKey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
    /// Manage admin-panel accounts.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Manage card stock.
    Cards {
        #[command(subcommand)]
        command: CardsCommand,
    },
    /// Write an online backup of the SQLite database to FILE.
    Backup { file: std::path::PathBuf },
    /// Replace the SQLite database with a backup (Kami must be stopped).
    Restore { file: std::path::PathBuf },
    /// Manage the master key.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a new master key and seal everything again under it (Kami must
    /// be stopped). The old key file is kept beside it, renamed: backups
    /// taken before open only with it.
    Rotate,
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Create a key; it is printed once, alone on the last line of stdout.
    Create {
        #[arg(long)]
        name: String,
        /// What the key may do (repeatable): admin (everything, the default),
        /// products:read, products:write, cards:write, stock:read, orders:read.
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an operator; a generated password is printed once, alone on
    /// the last line of stdout.
    Create {
        #[arg(long)]
        email: String,
        /// `owner` (everything) or `staff` (no staff, audit, keys or code reveal).
        #[arg(long, default_value = "owner", value_parser = ["owner", "staff"])]
        role: String,
    },
    /// Give an operator a new generated password (printed once, alone on
    /// the last line of stdout), unlock the account and end its sessions.
    ResetPassword {
        #[arg(long)]
        email: String,
    },
}

#[derive(Subcommand)]
enum CardsCommand {
    /// Import codes (one per line; UTF-8 or GBK) from FILE into a product.
    Import {
        #[arg(long)]
        product: i64,
        file: std::path::PathBuf,
    },
}

/// See the workspace Cargo.toml for why.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process (and what it starts).
///
/// mimalloc asks for huge pages on its arenas (`MADV_HUGEPAGE`), and the
/// kernel then fills the first touch of each 2 MiB with zeros inside the
/// page fault, on whichever thread touched it: in a drop, while the server's
/// memory grows, perf sampled a tokio worker spending up to 7 ms of a 10 ms
/// stretch in `clear_page_erms` under `do_huge_pmd_anonymous_page` (from
/// mimalloc's fresh pages and a growing hash table), with no answer going
/// out meanwhile. With 4 KiB pages the same zeroing comes a page at a time
/// and the longest stalls went (the benchmark's timelines). Alternated
/// 100,000-code drops (stop 46): orders/s +7%, the order p99.9 21–27 ms
/// against 40–47 ms, and the peak RSS 119–123 MiB against 143–152 MiB (huge
/// pages hold memory a 4 KiB page would not). The prctl also covers memory
/// SQLite and the TLS library take from glibc's malloc. Failure changes
/// nothing but speed, so it is ignored.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

fn main() -> std::process::ExitCode {
    no_transparent_huge_pages();
    let cli = Cli::parse();
    let mut cfg = match Config::load(&cli.flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kami: configuration error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { demo } => {
                cfg.demo |= demo;
                commands::serve::run(cfg).await
            }
            Command::Migrate => commands::admin::migrate(cfg).await,
            Command::ApiKey {
                command: ApiKeyCommand::Create { name, scopes },
            } => commands::admin::create_api_key(cfg, &name, &scopes).await,
            Command::Admin {
                command: AdminCommand::Create { email, role },
            } => commands::admin::create_admin(cfg, &email, &role).await,
            Command::Admin {
                command: AdminCommand::ResetPassword { email },
            } => commands::admin::reset_admin_password(cfg, &email).await,
            Command::Cards {
                command: CardsCommand::Import { product, file },
            } => commands::cards::import(cfg, product, &file).await,
            Command::Backup { file } => commands::backup::backup(cfg, &file).await,
            Command::Restore { file } => commands::backup::restore(cfg, &file).await,
            Command::Keys {
                command: KeysCommand::Rotate,
            } => commands::keys::rotate(cfg).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kami: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
