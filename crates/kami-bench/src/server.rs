//! Starting and stopping a Kami server as a child process, on a fresh data directory and a fresh
//! database, and running its CLI against the same settings.

use std::fmt;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rand::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

#[derive(Clone, Debug)]
pub struct ServerOpts {
    /// The `kami` binary.
    pub kami: PathBuf,
    /// An existing PostgreSQL database to connect to for `CREATE DATABASE` / `DROP DATABASE`.
    pub postgres_url: String,
    /// Keep the temporary directory (database, log) after the run.
    pub keep: bool,
    /// More `KAMI_*` settings for the server (e.g. `KAMI_REDIS_URL`).
    pub extra_env: Vec<(String, String)>,
}

/// A running `kami serve`. Stopped (and its database and directory removed) by
/// [`Server::shutdown`], or, as a last resort, on drop.
pub struct Server {
    pub backend: Backend,
    pub addr: SocketAddr,
    pub base_url: String,
    pub dir: PathBuf,
    pub log_path: PathBuf,
    pub database_url: String,
    pub sandbox_secret: String,
    kami: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// (admin URL, database name) of the database created for this run.
    pg_db: Option<(String, String)>,
    keep: bool,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill(&mut buf[..]);
    hex::encode(buf)
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a probe socket")?;
    Ok(l.local_addr()?.port())
}

/// `postgres://u@h:p/olddb?x=y` with the database name replaced.
fn with_database(url: &str, db: &str) -> Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base
        .find("://")
        .ok_or_else(|| anyhow!("not a URL: {url}"))?
        + 3;
    let authority_end = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..authority_end], db);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

pub fn psql(admin_url: &str, sql: &str) -> Result<()> {
    let out = Command::new("psql")
        .arg(admin_url)
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .stdin(Stdio::null())
        .output()
        .context("running psql (is the PostgreSQL client installed?)")?;
    if !out.status.success() {
        bail!(
            "psql -c {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Server {
    /// Creates the data directory (and the PostgreSQL database), starts `kami serve` and waits
    /// for `/readyz`.
    pub async fn start(backend: Backend, opts: &ServerOpts) -> Result<Server> {
        if !opts.kami.exists() {
            bail!(
                "Kami binary {} not found (build it with `cargo build --release -p kami` or pass --kami)",
                opts.kami.display()
            );
        }
        let tag = random_hex(6);
        let dir = std::env::temp_dir().join(format!("kami-bench-{backend}-{tag}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        let port = free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let base_url = format!("http://{addr}");
        let sandbox_secret = random_hex(24);

        let mut pg_db = None;
        let database_url = match backend {
            Backend::Sqlite => format!("sqlite://{}/kami.db", dir.display()),
            Backend::Postgres => {
                let name = format!("kami_bench_{tag}");
                if let Err(e) = psql(&opts.postgres_url, &format!("CREATE DATABASE {name}")) {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(e);
                }
                pg_db = Some((opts.postgres_url.clone(), name.clone()));
                with_database(&opts.postgres_url, &name)?
            }
        };

        let mut env = vec![
            ("KAMI_BIND".to_owned(), addr.to_string()),
            ("KAMI_DATA_DIR".to_owned(), dir.display().to_string()),
            ("KAMI_DATABASE_URL".to_owned(), database_url.clone()),
            ("KAMI_SANDBOX_SECRET".to_owned(), sandbox_secret.clone()),
            ("KAMI_RATE_LIMITS".to_owned(), "off".to_owned()),
            ("KAMI_LOG".to_owned(), "warn".to_owned()),
            ("KAMI_PUBLIC_URL".to_owned(), base_url.clone()),
        ];
        env.extend(opts.extra_env.iter().cloned());
        let log_path = dir.join("kami.log");
        let mut server = Server {
            backend,
            addr,
            base_url,
            dir,
            log_path,
            database_url,
            sandbox_secret,
            kami: opts.kami.clone(),
            env,
            child: None,
            pg_db,
            keep: opts.keep,
        };

        let log = File::create(&server.log_path)?;
        let child = server
            .command()
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} serve", server.kami.display()))?;
        server.child = Some(child);
        server.wait_ready(Duration::from_secs(120)).await?;
        Ok(server)
    }

    /// A `kami` command with this server's settings and no other `KAMI_*` variable.
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.kami);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("KAMI_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let url = format!("{}/readyz", self.base_url);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "kami serve exited with {status} before it was ready; log:\n{}",
                    self.log_tail(40)
                );
            }
            if let Ok(r) = client.get(&url).send().await {
                if r.status().as_u16() == 200 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "kami serve was not ready within {timeout:?}; log:\n{}",
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last `n` lines of the server's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Runs `kami <args>` with this server's settings; fails unless it exits 0.
    pub async fn cli(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = self.command();
        cmd.args(args).stdin(Stdio::null());
        let display = format!("kami {}", args.join(" "));
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await?
            .with_context(|| format!("running {display}"))?;
        if !out.status.success() {
            bail!(
                "`{display}` exited with {}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out)
    }

    /// `kami api-key create --name NAME`: the key is alone on the last line of stdout.
    pub async fn create_api_key(&self, name: &str) -> Result<String> {
        let out = self.cli(&["api-key", "create", "--name", name]).await?;
        last_line(&out.stdout)
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("`kami api-key create` printed nothing"))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Peak resident set size of the server so far (`VmHWM`), bytes.
    pub fn peak_rss(&self) -> Result<u64> {
        self.proc_status_kib("VmHWM").map(|k| k * 1024)
    }

    fn proc_status_kib(&self, field: &str) -> Result<u64> {
        let pid = self.pid().ok_or_else(|| anyhow!("server not running"))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        for line in status.lines() {
            if let Some(rest) = line.strip_prefix(field).and_then(|r| r.strip_prefix(':')) {
                let kib = rest.trim().trim_end_matches("kB").trim();
                return Ok(kib.parse()?);
            }
        }
        bail!("{field} not in /proc/{pid}/status")
    }

    /// Stops the server (SIGTERM, then SIGKILL after 10 s), drops the database and removes the
    /// directory (unless asked to keep it).
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if child.try_wait()?.is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.cleanup()
    }

    fn cleanup(&mut self) -> Result<()> {
        let mut result = Ok(());
        if let Some((admin, name)) = self.pg_db.take() {
            if self.keep {
                eprintln!("kept PostgreSQL database {name}");
            } else if let Err(e) = psql(
                &admin,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            ) {
                result = Err(e);
            }
        }
        if self.keep {
            eprintln!("kept {}", self.dir.display());
        } else if self.dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                result = Err(anyhow!("removing {}: {e}", self.dir.display()));
            }
        }
        self.dir = PathBuf::new();
        result
    }

    pub fn path_in_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.dir != Path::new("") {
            let _ = self.cleanup();
        }
    }
}

/// The last non-empty line of a process's output, trimmed.
pub fn last_line(out: &[u8]) -> Option<&str> {
    std::str::from_utf8(out)
        .ok()?
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
}
