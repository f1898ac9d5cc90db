//! Layered configuration: defaults → `kami.toml` → `KAMI_*` environment →
//! command-line flags (lldap's `configuration.rs`). Secrets may also come
//! from files (`KAMI_MASTER_KEY_FILE`, `KAMI_SANDBOX_SECRET_FILE`).
//!
//! Environment values are taken verbatim as strings and parsed per setting:
//! a generic "guess the type" layer would turn a secret like `00123` into
//! the number 123.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

/// A layer's value for a secret given inline or as a file: it replaces an
/// earlier layer's value in either form (the file of kami.toml gives way to
/// the inline variable). Both forms in one layer is a mistake to point out,
/// not to settle by a rule nobody can see.
fn replace_secret(
    inline: &mut Option<String>,
    file: &mut Option<PathBuf>,
    now: (Option<String>, Option<PathBuf>),
    (inline_name, file_name): (&str, &str),
) -> anyhow::Result<()> {
    match now {
        (Some(_), Some(_)) => bail!("both {inline_name} and {file_name} are set; keep one"),
        (Some(v), None) => (*inline, *file) = (Some(v), None),
        (None, Some(f)) => (*inline, *file) = (None, Some(f)),
        (None, None) => {}
    }
    Ok(())
}

/// Every setting, after layering. See README "Configuration".
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub bind: String,
    pub database_url: Option<String>,
    pub data_dir: PathBuf,
    pub master_key: Option<String>,
    pub master_key_file: Option<PathBuf>,
    pub redis_url: Option<String>,
    /// Put before every Redis key (`KAMI_REDIS_PREFIX`), so that several
    /// shops, or tests, can share one Redis.
    pub redis_prefix: String,
    pub sandbox_secret: Option<String>,
    pub sandbox_secret_file: Option<PathBuf>,
    /// Whole seconds an unpaid order holds its codes.
    pub order_ttl: u64,
    pub public_url: Option<String>,
    /// `on` or `off`.
    pub rate_limits: String,
    pub shop_name: String,
    pub notice: Option<String>,
    /// tracing filter, e.g. `info` or `kami_web=debug,info`.
    pub log: String,
    pub db_pool_size: u32,
    /// Proxies (IP addresses) whose X-Forwarded-For is believed.
    pub trusted_proxies: Vec<String>,
    /// Orders waiting for the group-commit writer at most; more get 503.
    pub writer_queue: usize,
    /// Orders (or payments) per group-commit transaction at most.
    pub writer_batch: usize,
    /// Bytes the request bodies still arriving may hold together; a body
    /// past it gets 503.
    pub body_budget: u64,
    /// Open connections per client address (IPv6 by /64); 0 for no cap.
    /// Not applied with `rate_limits = "off"`, nor to trusted proxies.
    pub connections_per_address: u32,
    pub demo: bool,
    /// Whole seconds between reconciliation runs, and the first wait of
    /// each unpaid order's backoff (`reconcile_interval` in kami.toml).
    pub reconcile_interval: u64,
    /// Whole seconds a payment channel whose breaker opened is not offered.
    pub channel_cooldown: u64,
    /// Consecutive failed payment starts that open a channel's breaker.
    pub channel_failure_threshold: u32,
    /// Payment channel sections (`[channels.epay]` …); applied by the
    /// channels that exist, the rest warned about.
    pub channels: BTreeMap<String, toml::Table>,
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
    /// The kami.toml keys some layer set (`is_configured`).
    #[serde(skip)]
    configured: BTreeSet<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            database_url: None,
            data_dir: PathBuf::from("./data"),
            master_key: None,
            master_key_file: None,
            redis_url: None,
            redis_prefix: "kami:".into(),
            sandbox_secret: None,
            sandbox_secret_file: None,
            order_ttl: 900,
            public_url: None,
            rate_limits: "on".into(),
            shop_name: "Kami".into(),
            notice: None,
            log: "info".into(),
            db_pool_size: 16,
            trusted_proxies: Vec::new(),
            writer_queue: 4096,
            writer_batch: 256,
            body_budget: kami_web::body_budget::DEFAULT_BODY_BUDGET,
            connections_per_address: kami_web::peer_cap::DEFAULT_CONNECTIONS_PER_ADDRESS,
            demo: false,
            reconcile_interval: 60,
            channel_cooldown: 30,
            channel_failure_threshold: 3,
            channels: BTreeMap::new(),
            config_file: None,
            configured: BTreeSet::new(),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("bind", &self.bind)
            .field(
                "database",
                &self.database_url().map(|u| kami_store::redact_url(&u)).ok(),
            )
            .field("data_dir", &self.data_dir)
            .field(
                "master_key",
                &self.master_key.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "redis",
                &self.redis_url.as_deref().map(kami_store::redact_url),
            )
            .field("sandbox", &self.sandbox_secret.is_some())
            .field("order_ttl", &self.order_ttl)
            .field("public_url", &self.public_url)
            .field("rate_limits", &self.rate_limits)
            .finish_non_exhaustive()
    }
}

/// Flags common to every subcommand; `None` means "not given".
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Flags {
    /// Address to listen on (KAMI_BIND).
    #[arg(long, global = true)]
    pub bind: Option<String>,
    /// sqlite://FILE or postgres://… (KAMI_DATABASE_URL).
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    /// Directory for the SQLite database and master key (KAMI_DATA_DIR).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// kami.toml to read (KAMI_CONFIG).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
}

const ENV_STRINGS: &[&str] = &[
    "bind",
    "database_url",
    "redis_url",
    "redis_prefix",
    "public_url",
    "rate_limits",
    "shop_name",
    "notice",
    "log",
];

/// The longest `order_ttl`, the admin panel's: an unpaid order holds its
/// codes at most a week.
const MAX_ORDER_TTL: u64 = kami_web::services::settings::MAX_ORDER_TTL_SECS as u64;

impl Config {
    pub fn load(flags: &Flags) -> anyhow::Result<Self> {
        Self::load_from(flags, |k| std::env::var(k).ok())
    }

    pub fn load_from(flags: &Flags, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        // An empty variable is an unset one (a deployment template that
        // leaves it blank): the default, or kami.toml's value, holds; so
        // `KAMI_SANDBOX_SECRET=` means no sandbox. An empty secret in
        // kami.toml or its file is refused by `validate`.
        let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let file = flags
            .config
            .clone()
            .or_else(|| env("KAMI_CONFIG").map(PathBuf::from))
            .or_else(|| Some(PathBuf::from("kami.toml")).filter(|p| p.exists()));
        let mut cfg = match &file {
            Some(path) => Self::from_file(path)?,
            None => Config::default(),
        };
        cfg.apply_env(env)?;
        cfg.apply_flags(flags);
        // Checked and used alike: `validate` would pass " http://x " and
        // links would carry the spaces.
        cfg.public_url = cfg.public_url.map(|u| u.trim().to_string());
        cfg.read_sandbox_secret_file()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The `kami.toml` layer. Its relative paths are relative to the file's
    /// directory, so the shop finds them whatever directory it starts in.
    fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let invalid = || format!("invalid config file {}", path.display());
        let mut c: Config = toml::from_str(&text).with_context(invalid)?;
        let table: toml::Table = toml::from_str(&text).with_context(invalid)?;
        for (inline, file) in [
            ("master_key", "master_key_file"),
            ("sandbox_secret", "sandbox_secret_file"),
        ] {
            if table.contains_key(inline) && table.contains_key(file) {
                bail!("{} sets both {inline} and {file}; keep one", path.display());
            }
        }
        let base = path.parent().unwrap_or(Path::new(""));
        if table.contains_key("data_dir") {
            c.data_dir = base.join(&c.data_dir);
        }
        c.master_key_file = c.master_key_file.map(|f| base.join(f));
        c.sandbox_secret_file = c.sandbox_secret_file.map(|f| base.join(f));
        c.configured = table.keys().cloned().collect();
        c.config_file = Some(path.to_path_buf());
        Ok(c)
    }

    /// The `KAMI_*` layer. Paths stay as given: relative to the working
    /// directory.
    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        for key in ENV_STRINGS {
            if let Some(v) = env(&format!("KAMI_{}", key.to_uppercase())) {
                self.set_string(key, v);
                self.configured.insert(key.to_string());
            }
        }
        if let Some(v) = env("KAMI_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        replace_secret(
            &mut self.master_key,
            &mut self.master_key_file,
            (
                env("KAMI_MASTER_KEY"),
                env("KAMI_MASTER_KEY_FILE").map(PathBuf::from),
            ),
            ("KAMI_MASTER_KEY", "KAMI_MASTER_KEY_FILE"),
        )?;
        replace_secret(
            &mut self.sandbox_secret,
            &mut self.sandbox_secret_file,
            (
                env("KAMI_SANDBOX_SECRET"),
                env("KAMI_SANDBOX_SECRET_FILE").map(PathBuf::from),
            ),
            ("KAMI_SANDBOX_SECRET", "KAMI_SANDBOX_SECRET_FILE"),
        )?;
        if let Some(v) = env("KAMI_ORDER_TTL") {
            self.order_ttl = v
                .trim()
                .parse()
                .with_context(|| format!("KAMI_ORDER_TTL must be whole seconds, got {v:?}"))?;
            self.configured.insert("order_ttl".into());
        }
        if let Some(v) = env("KAMI_DB_POOL_SIZE") {
            self.db_pool_size = v
                .trim()
                .parse()
                .context("KAMI_DB_POOL_SIZE must be a number")?;
        }
        if let Some(v) = env("KAMI_TRUSTED_PROXIES") {
            self.trusted_proxies = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
        }
        if let Some(v) = env("KAMI_WRITER_QUEUE") {
            self.writer_queue = v
                .trim()
                .parse()
                .context("KAMI_WRITER_QUEUE must be a number")?;
        }
        if let Some(v) = env("KAMI_WRITER_BATCH") {
            self.writer_batch = v
                .trim()
                .parse()
                .context("KAMI_WRITER_BATCH must be a number")?;
        }
        if let Some(v) = env("KAMI_BODY_BUDGET") {
            self.body_budget = v
                .trim()
                .parse()
                .context("KAMI_BODY_BUDGET must be a number of bytes")?;
        }
        if let Some(v) = env("KAMI_CONNECTIONS_PER_ADDRESS") {
            self.connections_per_address = v
                .trim()
                .parse()
                .context("KAMI_CONNECTIONS_PER_ADDRESS must be a number")?;
        }
        if let Some(v) = env("KAMI_DEMO") {
            self.demo = matches!(v.trim(), "1" | "true" | "yes" | "on");
        }
        Ok(())
    }

    /// The flags layer. Paths stay as given: relative to the working
    /// directory.
    fn apply_flags(&mut self, flags: &Flags) {
        if let Some(v) = &flags.bind {
            self.bind = v.clone();
        }
        if let Some(v) = &flags.database_url {
            self.database_url = Some(v.clone());
        }
        if let Some(v) = &flags.data_dir {
            self.data_dir = v.clone();
        }
    }

    fn set_string(&mut self, key: &str, v: String) {
        match key {
            "bind" => self.bind = v,
            "database_url" => self.database_url = Some(v),
            "redis_url" => self.redis_url = Some(v),
            "redis_prefix" => self.redis_prefix = v,
            "public_url" => self.public_url = Some(v),
            "rate_limits" => self.rate_limits = v,
            "shop_name" => self.shop_name = v,
            "notice" => self.notice = Some(v),
            "log" => self.log = v,
            _ => unreachable!("ENV_STRINGS lists only handled keys"),
        }
    }

    /// The layers leave at most one of the secret's forms.
    fn read_sandbox_secret_file(&mut self) -> anyhow::Result<()> {
        if let Some(path) = &self.sandbox_secret_file {
            let s = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read sandbox secret file {}", path.display()))?;
            self.sandbox_secret = Some(s.trim().to_string());
        }
        Ok(())
    }

    /// Whether kami.toml or a `KAMI_*` variable set `key` (a kami.toml
    /// key), rather than it holding its default; asked of the settings the
    /// admin panel also changes, which configuration then fixes.
    pub fn is_configured(&self, key: &str) -> bool {
        self.configured.contains(key)
    }

    /// `trusted_proxies` parsed; an entry that is not an IP address stops
    /// the start (a typo would silently trust nobody, or the wrong host).
    pub fn trusted_proxy_ips(&self) -> anyhow::Result<Vec<std::net::IpAddr>> {
        self.trusted_proxies
            .iter()
            .map(|p| {
                p.parse()
                    .with_context(|| format!("trusted_proxies: {p:?} is not an IP address"))
            })
            .collect()
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.trusted_proxy_ips()?;
        if let Some(url) = &self.database_url {
            // Every command is its own process: an in-memory database would
            // vanish when it ends, and sqlx takes `sqlite::memory:` apart as
            // a file named `:memory:` beside a lock of that name.
            let file = kami_store::Backend::sqlite_file(url);
            if file.is_some_and(|f| f.as_os_str() == ":memory:") || url.contains("mode=memory") {
                bail!(
                    "database_url {url:?} is an in-memory SQLite database, which is gone when \
                     the command ends; use sqlite://FILE"
                );
            }
        }
        if !matches!(self.rate_limits.as_str(), "on" | "off") {
            bail!(
                "rate_limits must be \"on\" or \"off\", got {:?}",
                self.rate_limits
            );
        }
        if self.reconcile_interval == 0 {
            bail!("reconcile_interval must be at least 1 second");
        }
        if self.order_ttl == 0 || self.order_ttl > MAX_ORDER_TTL {
            bail!(
                "order_ttl must be 1 to {MAX_ORDER_TTL} seconds (a week), got {}",
                self.order_ttl
            );
        }
        if let Some(u) = &self.public_url {
            let usable = url::Url::parse(u.trim()).ok().filter(|p| {
                matches!(p.scheme(), "http" | "https")
                    && p.host_str().is_some_and(|h| !h.is_empty())
                    && p.query().is_none()
                    && p.fragment().is_none()
            });
            if usable.is_none() {
                bail!(
                    "public_url must be an absolute http:// or https:// address without a query, \
                     such as https://shop.example.com; got {u:?}"
                );
            }
        }
        if self.sandbox_secret.as_deref() == Some("") {
            bail!("sandbox_secret is empty; unset it to disable the sandbox channel");
        }
        Ok(())
    }

    pub fn database_url(&self) -> anyhow::Result<String> {
        let url = match &self.database_url {
            Some(u) => u.clone(),
            None => format!("sqlite://{}", self.data_dir.join("kami.db").display()),
        };
        if kami_store::Backend::from_url(&url).is_none() {
            bail!(
                "unsupported database URL {:?}: use sqlite://FILE or postgres://…",
                kami_store::redact_url(&url)
            );
        }
        Ok(url)
    }

    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => {
                let host = self
                    .bind
                    .replace("0.0.0.0", "127.0.0.1")
                    .replace("[::]", "[::1]");
                format!("http://{host}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(env: &[(&str, &str)], flags: Flags) -> anyhow::Result<Config> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load_from(&flags, |k| env.get(k).cloned())
    }

    #[test]
    fn layers_defaults_file_env_flags() {
        let dir = std::env::temp_dir().join(format!("kami-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("kami.toml");
        std::fs::write(
            &file,
            "bind = \"127.0.0.1:9000\"\norder_ttl = 60\nshop_name = \"File\"\n",
        )
        .unwrap();
        let cfg = load(
            &[
                ("KAMI_CONFIG", file.to_str().unwrap()),
                ("KAMI_ORDER_TTL", "30"),
                ("KAMI_SANDBOX_SECRET", "00123"),
            ],
            Flags {
                bind: Some("127.0.0.1:9100".into()),
                ..Flags::default()
            },
        )
        .unwrap();
        assert_eq!(cfg.bind, "127.0.0.1:9100");
        assert_eq!(cfg.order_ttl, 30);
        assert_eq!(cfg.shop_name, "File");
        assert_eq!(cfg.sandbox_secret.as_deref(), Some("00123"));
        assert_eq!(cfg.public_url(), "http://127.0.0.1:9100");
    }

    #[test]
    fn an_empty_sandbox_secret_variable_turns_the_sandbox_off() {
        let cfg = load(&[("KAMI_SANDBOX_SECRET", "")], Flags::default()).unwrap();
        assert_eq!(cfg.sandbox_secret, None);
    }

    #[test]
    fn rejects_bad_values_and_unknown_keys() {
        assert!(load(&[("KAMI_ORDER_TTL", "soon")], Flags::default()).is_err());
        assert!(load(
            &[("KAMI_ORDER_TTL", "18446744073709551615")],
            Flags::default()
        )
        .is_err());
        assert!(load(&[("KAMI_ORDER_TTL", "604801")], Flags::default()).is_err());
        assert!(load(&[("KAMI_ORDER_TTL", "604800")], Flags::default()).is_ok());
        for bad in [
            "not a url",
            "shop.example.com",
            "ftp://x",
            "https://x/?a=1",
            "http://",
        ] {
            assert!(
                load(&[("KAMI_PUBLIC_URL", bad)], Flags::default()).is_err(),
                "{bad}"
            );
        }
        let cfg = load(
            &[("KAMI_PUBLIC_URL", "https://shop.example.com/kami/")],
            Flags::default(),
        )
        .unwrap();
        assert_eq!(cfg.public_url(), "https://shop.example.com/kami");
        assert!(load(&[("KAMI_RATE_LIMITS", "maybe")], Flags::default()).is_err());
        assert!(
            load(&[("KAMI_DATABASE_URL", "mysql://x")], Flags::default())
                .unwrap()
                .database_url()
                .is_err()
        );
        let dir = std::env::temp_dir().join(format!("kami-cfg2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("kami.toml");
        std::fs::write(&file, "bnd = \"typo\"\n").unwrap();
        assert!(load(&[("KAMI_CONFIG", file.to_str().unwrap())], Flags::default()).is_err());
    }

    #[test]
    fn debug_redacts_secrets() {
        let cfg = load(
            &[
                ("KAMI_DATABASE_URL", "postgres://u:pw@h/db"),
                ("KAMI_MASTER_KEY", "c2VjcmV0"),
                ("KAMI_REDIS_URL", "redis://:rpw@h:6379/0"),
            ],
            Flags::default(),
        )
        .unwrap();
        let s = format!("{cfg:?}");
        assert!(
            !s.contains("pw@") && !s.contains("c2VjcmV0") && s.contains("redis://:***@h"),
            "{s}"
        );
    }

    #[test]
    fn an_empty_variable_is_an_unset_one() {
        let cfg = load(
            &[
                ("KAMI_DATABASE_URL", ""),
                ("KAMI_ORDER_TTL", " "),
                ("KAMI_RATE_LIMITS", ""),
                ("KAMI_PUBLIC_URL", ""),
                ("KAMI_BIND", ""),
            ],
            Flags::default(),
        )
        .unwrap();
        assert_eq!(cfg.database_url, None);
        assert_eq!(cfg.order_ttl, 900);
        assert_eq!(cfg.rate_limits, "on");
        assert_eq!(cfg.public_url, None);
        assert_eq!(cfg.bind, Config::default().bind);
    }

    /// A directory holding `kami.toml` with `toml`, and the file's path.
    fn config_dir(toml: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kami.toml");
        std::fs::write(&file, toml).unwrap();
        (dir, file.to_str().unwrap().to_string())
    }

    #[test]
    fn a_secret_from_the_environment_replaces_kami_tomls_in_either_form() {
        let (dir, file) =
            config_dir("sandbox_secret_file = \"sb.txt\"\nmaster_key = \"c2VjcmV0\"\n");
        std::fs::write(dir.path().join("sb.txt"), "from-the-file\n").unwrap();
        let cfg = load(
            &[
                ("KAMI_CONFIG", &file),
                ("KAMI_SANDBOX_SECRET", "from-the-env"),
                ("KAMI_MASTER_KEY_FILE", "/run/secrets/kami.key"),
            ],
            Flags::default(),
        )
        .unwrap();
        assert_eq!(cfg.sandbox_secret.as_deref(), Some("from-the-env"));
        assert_eq!(cfg.sandbox_secret_file, None);
        assert_eq!(cfg.master_key, None);
        assert_eq!(
            cfg.master_key_file.as_deref(),
            Some(Path::new("/run/secrets/kami.key"))
        );

        // And the other way round: the environment's file over kami.toml's value.
        let (_dir2, file2) =
            config_dir("sandbox_secret = \"from-toml\"\nmaster_key_file = \"m.key\"\n");
        std::fs::write(dir.path().join("env-sb.txt"), "env-file\n").unwrap();
        let env_file = dir.path().join("env-sb.txt");
        let cfg = load(
            &[
                ("KAMI_CONFIG", &file2),
                ("KAMI_SANDBOX_SECRET_FILE", env_file.to_str().unwrap()),
                ("KAMI_MASTER_KEY", "c2VjcmV0"),
            ],
            Flags::default(),
        )
        .unwrap();
        assert_eq!(cfg.sandbox_secret.as_deref(), Some("env-file"));
        assert_eq!(cfg.master_key.as_deref(), Some("c2VjcmV0"));
        assert_eq!(cfg.master_key_file, None);
    }

    #[test]
    fn both_forms_of_a_secret_in_one_layer_is_an_error() {
        for env in [
            [
                ("KAMI_MASTER_KEY", "c2VjcmV0"),
                ("KAMI_MASTER_KEY_FILE", "/m.key"),
            ],
            [
                ("KAMI_SANDBOX_SECRET", "s"),
                ("KAMI_SANDBOX_SECRET_FILE", "/s.txt"),
            ],
        ] {
            let e = load(&env, Flags::default()).unwrap_err().to_string();
            assert!(e.contains("both") && e.contains(env[1].0), "{e}");
        }
        for toml in [
            "master_key = \"c2VjcmV0\"\nmaster_key_file = \"m.key\"\n",
            "sandbox_secret = \"s\"\nsandbox_secret_file = \"s.txt\"\n",
        ] {
            let (_dir, file) = config_dir(toml);
            let e = load(&[("KAMI_CONFIG", &file)], Flags::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("sets both"), "{e}");
        }
    }

    #[test]
    fn paths_in_kami_toml_are_relative_to_it_and_others_to_the_working_directory() {
        let (dir, file) = config_dir(
            "data_dir = \"reldata\"\nsandbox_secret_file = \"sec/sb.txt\"\nmaster_key_file = \"m.key\"\n",
        );
        std::fs::create_dir(dir.path().join("sec")).unwrap();
        std::fs::write(dir.path().join("sec/sb.txt"), "beside-the-file").unwrap();
        let cfg = load(&[("KAMI_CONFIG", &file)], Flags::default()).unwrap();
        assert_eq!(cfg.data_dir, dir.path().join("reldata"));
        assert_eq!(cfg.master_key_file, Some(dir.path().join("m.key")));
        assert_eq!(cfg.sandbox_secret.as_deref(), Some("beside-the-file"));

        let cfg = load(
            &[
                ("KAMI_CONFIG", &file),
                ("KAMI_DATA_DIR", "envdata"),
                ("KAMI_MASTER_KEY_FILE", "keys/m.key"),
            ],
            Flags::default(),
        )
        .unwrap();
        assert_eq!(cfg.data_dir, Path::new("envdata"));
        assert_eq!(
            cfg.master_key_file.as_deref(),
            Some(Path::new("keys/m.key"))
        );
        let cfg = load(
            &[("KAMI_CONFIG", &file)],
            Flags {
                data_dir: Some("flagdata".into()),
                ..Flags::default()
            },
        )
        .unwrap();
        assert_eq!(cfg.data_dir, Path::new("flagdata"));
    }

    #[test]
    fn public_url_is_used_as_validated_trimmed() {
        let cfg = load(&[("KAMI_PUBLIC_URL", " http://x.test ")], Flags::default()).unwrap();
        assert_eq!(cfg.public_url.as_deref(), Some("http://x.test"));
        assert_eq!(cfg.public_url(), "http://x.test");
    }

    #[test]
    fn an_in_memory_sqlite_database_is_refused() {
        for url in [
            "sqlite::memory:",
            "sqlite://:memory:",
            "sqlite://x.db?mode=memory",
        ] {
            let e = load(&[("KAMI_DATABASE_URL", url)], Flags::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains("in-memory"), "{url}: {e}");
        }
    }

    #[test]
    fn knows_which_panel_settings_configuration_sets() {
        let cfg = load(&[], Flags::default()).unwrap();
        assert!(!cfg.is_configured("order_ttl") && !cfg.is_configured("shop_name"));
        let cfg = load(&[("KAMI_ORDER_TTL", "900")], Flags::default()).unwrap();
        assert!(cfg.is_configured("order_ttl") && !cfg.is_configured("notice"));
        let (_dir, file) = config_dir("notice = \"hi\"\n");
        let cfg = load(&[("KAMI_CONFIG", &file)], Flags::default()).unwrap();
        assert!(cfg.is_configured("notice") && !cfg.is_configured("order_ttl"));
    }
}
