//! Runs tests/gateways_rsa/fake_gateway.py: a fake Alipay and WeChat Pay that
//! verify Kami's requests and sign their answers and notifications with the
//! gateways' own Python client libraries.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

fn script() -> String {
    format!(
        "{}/../../tests/gateways_rsa/fake_gateway.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

pub struct FakeGateway {
    pub base: String,
    /// `{"alipay": {...}, "wechatpay": {...}}`: the `[channels.*]` settings
    /// that point Kami at this gateway, key files relative to its key dir.
    pub config: Value,
    http: reqwest::Client,
    child: Child,
}

impl FakeGateway {
    /// Starts the gateway, which writes its throwaway keys into `key_dir`.
    pub fn start(key_dir: &Path) -> Self {
        let python = crate::common::gateways::python();
        let stderr = std::fs::File::create(key_dir.join("fake_gateway.log")).unwrap();
        let mut child = Command::new(&python)
            .arg(script())
            .arg(key_dir)
            // Keep the source tree free of __pycache__.
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let config: Value = serde_json::from_str(&line).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "fake gateway did not start ({}):\n{}",
                python.display(),
                std::fs::read_to_string(key_dir.join("fake_gateway.log")).unwrap_or_default()
            )
        });
        let base = format!("http://127.0.0.1:{}", config["port"]);
        Self {
            base,
            config,
            http: reqwest::Client::new(),
            child,
        }
    }

    pub async fn control(&self, path: &str, body: Value) -> Value {
        let res = self
            .http
            .post(format!("{}/__test__/{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("fake gateway control");
        assert!(
            res.status().is_success(),
            "control {path}: {}",
            res.status()
        );
        res.json().await.unwrap()
    }

    /// Every request Kami made, with whether the gateway library verified it.
    pub async fn log(&self) -> Vec<Value> {
        let res = self
            .http
            .get(format!("{}/__test__/log", self.base))
            .send()
            .await
            .unwrap();
        res.json::<Value>()
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// Asserts the gateway saw `n` requests from Kami and verified all of them.
    pub async fn assert_all_verified(&self, at_least: usize) {
        let log = self.log().await;
        assert!(
            log.len() >= at_least,
            "gateway saw {} requests: {log:?}",
            log.len()
        );
        assert!(
            log.iter().all(|e| e["verified"] == json!(true)),
            "the gateway refused a request signature: {log:?}"
        );
    }

    /// `[channels.alipay]` and `[channels.wechatpay]` as kami.toml text.
    pub fn kami_toml(&self) -> String {
        let mut out = String::new();
        for name in ["alipay", "wechatpay"] {
            out.push_str(&format!("[channels.{name}]\n"));
            let section = self.config[name].as_object().unwrap();
            for (k, v) in section {
                let v = toml::Value::String(v.as_str().unwrap().to_string());
                out.push_str(&format!("{k} = {v}\n"));
            }
            if name == "alipay" {
                out.push_str("mode = \"precreate\"\n");
            }
        }
        out
    }

    /// One channel's section as `build_channel` takes it, with overrides.
    pub fn section(&self, name: &str, overrides: &[(&str, &str)]) -> toml::Table {
        let mut t = toml::Table::new();
        for (k, v) in self.config[name].as_object().unwrap() {
            t.insert(k.clone(), toml::Value::String(v.as_str().unwrap().into()));
        }
        for (k, v) in overrides {
            t.insert((*k).into(), toml::Value::String((*v).into()));
        }
        t
    }
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
