//! The machine a run happened on, and small formatting helpers shared by the scenarios.

use serde_json::json;

#[derive(Clone, Debug)]
pub struct Machine {
    pub cpus: usize,
    pub model: String,
    pub mem_total_bytes: u64,
    pub kernel: String,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_total_bytes = meminfo
            .lines()
            .find_map(|l| {
                let rest = l.strip_prefix("MemTotal:")?;
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0)
            * 1024;
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        Machine {
            cpus,
            model,
            mem_total_bytes,
            kernel,
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "{} CPU{} ({}), {} RAM, Linux {}",
            self.cpus,
            if self.cpus == 1 { "" } else { "s" },
            self.model,
            bytes(self.mem_total_bytes),
            self.kernel
        )
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "cpus": self.cpus, "model": self.model,
            "mem_total_bytes": self.mem_total_bytes, "kernel": self.kernel,
        })
    }
}

/// The command line this program was started with, quoted for a POSIX shell.
pub fn command_line() -> String {
    // Secrets given on the command line are not printed with the figures.
    let mut secret_next = false;
    std::env::args()
        .map(|a| {
            let secret = std::mem::replace(
                &mut secret_next,
                matches!(a.as_str(), "--api-key" | "--sandbox-secret"),
            );
            if secret || a.starts_with("--api-key=") || a.starts_with("--sandbox-secret=") {
                "<redacted>".to_string()
            } else if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+%".contains(c))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// 1234567 → "1,234,567".
#[allow(clippy::manual_is_multiple_of)] // `is_multiple_of` is newer than the workspace's MSRV
pub fn int(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate, rounded to a whole number with separators below 10 and one decimal below that.
pub fn rate(r: f64) -> String {
    if r < 10.0 {
        format!("{r:.1}")
    } else {
        int(r.round() as u64)
    }
}

/// Microseconds as a readable duration.
pub fn us(v: u64) -> String {
    if v < 1_000 {
        format!("{v} µs")
    } else if v < 1_000_000 {
        format!("{:.2} ms", v as f64 / 1e3)
    } else {
        format!("{:.2} s", v as f64 / 1e6)
    }
}

pub fn bytes(b: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let b = b as f64;
    if b >= 1024.0 * MIB {
        format!("{:.1} GiB", b / (1024.0 * MIB))
    } else {
        format!("{:.1} MiB", b / MIB)
    }
}

/// Prints rows of (label, value) aligned on the label column.
pub fn print_rows(rows: &[(String, String)]) {
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    for (k, v) in rows {
        let mut first = true;
        for line in v.lines() {
            if first {
                println!("  {k:<width$}  {line}");
                first = false;
            } else {
                println!("  {:<width$}  {line}", "");
            }
        }
        if first {
            println!("  {k}");
        }
    }
}

/// Clock ticks per second for `/proc/*/stat` (asked once of `getconf CLK_TCK`; 100 otherwise).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// User + system CPU seconds a process has used so far (`"self"` for this one).
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields after it are fixed.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) … utime(11) stime(12).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// Bytes a process has caused to be read from storage so far (`read_bytes`
/// of `/proc/PID/io`: reads served from the page cache do not count), so a
/// phase that waits on the disk shows it.
pub fn disk_read_bytes(pid: &str) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("read_bytes:"))?
        .trim()
        .parse()
        .ok()
}

/// User + system CPU seconds so far of every process named `postgres` on
/// this machine: the server's database when it is PostgreSQL on this host
/// (another client of the same PostgreSQL counts too). Backends that exit
/// take their share with them, so a phase's difference is only meaningful
/// while the server's pool keeps its connections.
pub fn postgres_cpu_seconds() -> Option<f64> {
    postgres_sum(cpu_seconds)
}

/// Bytes every local `postgres` process has read from storage so far
/// (`disk_read_bytes`; the same caveats as `postgres_cpu_seconds`).
pub fn postgres_disk_read_bytes() -> Option<u64> {
    postgres_sum(|pid| disk_read_bytes(pid).map(|b| b as f64)).map(|b| b as u64)
}

/// `of(pid)` summed over every process named `postgres` on this machine.
fn postgres_sum(of: impl Fn(&str) -> Option<f64>) -> Option<f64> {
    let mut total = 0.0;
    let mut any = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let is_postgres = std::fs::read_to_string(entry.path().join("comm"))
            .is_ok_and(|c| c.trim_end().starts_with("postgres"));
        if let (true, Some(v)) = (is_postgres, of(pid)) {
            total += v;
            any = true;
        }
    }
    any.then_some(total)
}

/// Busy CPU seconds of the whole machine so far (all CPUs; from `/proc/stat`).
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy =
        v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)? + v.get(7).unwrap_or(&0.0);
    Some(busy / clock_ticks())
}

/// The 1-minute load average.
pub fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU used by the server and by this program over a stretch of wall time.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuUse {
    pub server_cores: Option<f64>,
    pub client_cores: Option<f64>,
    /// The whole machine: server, load generator, database and anything else running.
    pub machine_cores: Option<f64>,
}

pub struct CpuMeter {
    pid: String,
    start: std::time::Instant,
    server: Option<f64>,
    client: Option<f64>,
    machine: Option<f64>,
    /// PostgreSQL's processes, when the server runs on a local PostgreSQL.
    database: Option<f64>,
    /// The server's bytes read from storage.
    disk_read: Option<u64>,
    /// PostgreSQL's, when counted (`with_postgres`).
    database_read: Option<u64>,
}

impl CpuMeter {
    pub fn start(server_pid: Option<u32>) -> CpuMeter {
        let pid = server_pid.map(|p| p.to_string()).unwrap_or_default();
        CpuMeter {
            server: cpu_seconds(&pid),
            client: cpu_seconds("self"),
            machine: machine_busy_seconds(),
            database: None,
            disk_read: disk_read_bytes(&pid),
            database_read: None,
            pid,
            start: std::time::Instant::now(),
        }
    }

    /// Also counts the CPU of this machine's PostgreSQL processes.
    pub fn with_postgres(mut self) -> CpuMeter {
        self.database = postgres_cpu_seconds();
        self.database_read = postgres_disk_read_bytes();
        self
    }

    /// Bytes PostgreSQL's processes have read from storage since `start`,
    /// when counted (`with_postgres`).
    pub fn database_read(&self) -> Option<u64> {
        Some(postgres_disk_read_bytes()?.saturating_sub(self.database_read?))
    }

    /// CPU seconds PostgreSQL's processes have used since `start`, when
    /// counted (`with_postgres`).
    pub fn database_used(&self) -> Option<f64> {
        let used = postgres_cpu_seconds()? - self.database?;
        (used >= 0.0).then_some(used)
    }

    /// Bytes the server has read from storage since `start`.
    pub fn disk_read(&self) -> Option<u64> {
        Some(disk_read_bytes(&self.pid)?.saturating_sub(self.disk_read?))
    }

    /// CPU seconds the server and this program have used since `start`.
    pub fn used(&self) -> (Option<f64>, Option<f64>) {
        let since = |before: Option<f64>, now: Option<f64>| Some(now? - before?);
        (
            since(self.server, cpu_seconds(&self.pid)),
            since(self.client, cpu_seconds("self")),
        )
    }

    pub fn stop(&self) -> CpuUse {
        let wall = self.start.elapsed().as_secs_f64();
        let cores = |before: Option<f64>, now: Option<f64>| match (before, now) {
            (Some(b), Some(n)) if wall > 0.0 => Some((n - b) / wall),
            _ => None,
        };
        CpuUse {
            server_cores: cores(self.server, cpu_seconds(&self.pid)),
            client_cores: cores(self.client, cpu_seconds("self")),
            machine_cores: cores(self.machine, machine_busy_seconds()),
        }
    }
}

impl CpuUse {
    pub fn text(&self) -> String {
        let f = |v: Option<f64>| v.map(|c| format!("{c:.2}")).unwrap_or_else(|| "n/a".into());
        format!(
            "CPU cores busy: server {}, load generator {}, whole machine {}",
            f(self.server_cores),
            f(self.client_cores),
            f(self.machine_cores)
        )
    }

    pub fn to_json(self) -> serde_json::Value {
        let r = |v: Option<f64>| v.map(|c| (c * 1000.0).round() / 1000.0);
        json!({
            "server_cores": r(self.server_cores),
            "client_cores": r(self.client_cores),
            "machine_cores": r(self.machine_cores),
        })
    }
}
