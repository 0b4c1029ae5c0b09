//! Helpers shared by the integration tests: start the real binary, read its logs, talk HTTP.
#![allow(dead_code)] // each test file uses a different subset
#![allow(clippy::unwrap_used)] // test helpers: a failure is a test failure

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_modelslab-sentinel");

/// Starts the emulator in-process on 127.0.0.1:0; it stops when the guard is dropped.
pub async fn emulator(scenario: modelslab_sentinel::sim::Scenario) -> (String, tokio_util::sync::DropGuard) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let handle = modelslab_sentinel::sim::spawn(listener, scenario, token.clone()).unwrap();
    (format!("http://{}", handle.addr), token.drop_guard())
}

/// A running `modelslab-sentinel` process, killed on drop.
pub struct Process {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Process {
    /// Starts the binary with `args` and extra environment variables; stderr and stdout are
    /// collected into one log.
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Process {
        let mut cmd = Command::new(BIN);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.env_remove("RUST_LOG").env_remove("MODELSLAB_SENTINEL_CONFIG");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn modelslab-sentinel");
        let log = Arc::new(Mutex::new(String::new()));
        for stream in [
            child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        Process { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits (up to `timeout`) for a log line containing `prefix` and returns what follows it
    /// up to the next whitespace.
    pub fn wait_for_log(&self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if let Some(i) = log.find(prefix) {
                let rest = &log[i + prefix.len()..];
                return rest.split(|c: char| c.is_whitespace() || c == '"').next().unwrap_or("").to_owned();
            }
            assert!(Instant::now() < deadline, "no log line with {prefix:?} within {timeout:?}; log so far:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The admin address the agent logged.
    pub fn admin_addr(&self) -> SocketAddr {
        let addr = self.wait_for_log("admin server listening on http://", Duration::from_secs(20));
        addr.parse().unwrap_or_else(|_| panic!("bad admin address {addr:?}"))
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().unwrap().success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads drain what the process wrote last.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            assert!(Instant::now() < deadline, "process still running after {timeout:?}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to completion: (exit code, stdout, stderr).
pub fn run_to_end(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("RUST_LOG").env_remove("MODELSLAB_SENTINEL_CONFIG");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run modelslab-sentinel");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `text` to `dir/name` and returns the path as a string.
pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).no_proxy().build().unwrap()
}

pub async fn get(url: &str) -> (u16, String) {
    let r = http().get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (r.status().as_u16(), r.text().await.unwrap())
}

pub async fn post(url: &str, body: &str) -> (u16, String) {
    let r = http().post(url).body(body.to_owned()).send().await.unwrap_or_else(|e| panic!("POST {url}: {e}"));
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The value of the first sample line that starts with `series` (name and labels as rendered).
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
pub async fn eventually(timeout: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within {timeout:?}: {what}");
}

/// Runs `promtool check metrics` on an exposition; returns its complaints.
pub fn promtool_check_metrics(text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is needed for this test: apt-get install prometheus (.ci/run does)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

/// Runs the official `modelslab` CLI (PyPI `modelslab-cli`) to generate an image against
/// `base_url`, in a throw-away HOME; returns the JSON it printed.
pub async fn modelslab_cli_generate(base_url: &str, extra: &[&str]) -> serde_json::Value {
    let home = tempfile::tempdir().unwrap();
    let mut args: Vec<String> =
        ["--base-url", base_url, "--api-key", "cli-key", "generate", "image", "--prompt", "a lighthouse"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args.extend(["--download=false", "-o", "json"].map(String::from));
    let out = tokio::task::spawn_blocking(move || {
        Command::new("modelslab")
            .args(&args)
            .env("HOME", home.path())
            .env("MODELSLAB_NO_UPDATE_CHECK", "1")
            .output()
            .expect("modelslab-cli is needed: pip install modelslab-cli (scripts/test does)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "modelslab-cli failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let start = stdout.find('{').unwrap_or_else(|| panic!("no JSON from modelslab-cli: {stdout}"));
    serde_json::from_str(&stdout[start..]).unwrap()
}
