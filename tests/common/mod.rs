//! The one harness of the integration tests: the emulator, the agent in-process or as a process,
//! components on their own, HTTP helpers, the metric matcher ([`Scrape`]) and the one polling
//! loop ([`eventually`]). Every server listens on 127.0.0.1:0.
#![allow(dead_code, unreachable_pub)] // each test file uses a different subset, all of it `pub`
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is a test failure

pub mod scrape;

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use modelslab_sentinel::app::{self, Handle, Listeners, Options};
use modelslab_sentinel::config::{self, Config, Environment};
use modelslab_sentinel::metrics::Metrics;
use modelslab_sentinel::observe::Observer;
use modelslab_sentinel::sim::{self, Scenario};
pub use scrape::Scrape;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub const BIN: &str = env!("CARGO_BIN_EXE_modelslab-sentinel");

// ---------------------------------------------------------------- the emulator

/// The emulator, in-process on 127.0.0.1:0; it stops when dropped (or by [`Emulator::stop`]).
pub struct Emulator {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub addr: SocketAddr,
    token: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Emulator {
    /// Stops serving and waits until the listener is closed.
    pub async fn stop(mut self) {
        self.token.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    /// Replaces the scenario at run time, as `PUT /_sim/scenario` does.
    pub async fn set_scenario(&self, yaml: &str) {
        let r = http().put(format!("{}/_sim/scenario", self.url)).body(yaml.to_owned()).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

pub async fn emulator(scenario: Scenario) -> Emulator {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token = CancellationToken::new();
    let handle = sim::spawn(listener, scenario, token.clone()).unwrap();
    Emulator { url: format!("http://{}", handle.addr), addr: handle.addr, token, task: Some(handle.task) }
}

/// A test's own HTTP server (a hand-made upstream, a status page, a receiver), on 127.0.0.1:0
/// until dropped.
pub struct Served {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub addr: SocketAddr,
    _guard: tokio_util::sync::DropGuard,
}

pub async fn serve(app: axum::Router) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(t.cancelled_owned()).await.unwrap() });
    Served { url: format!("http://{addr}"), addr, _guard: token.drop_guard() }
}

// ---------------------------------------------------------------- redis

/// A real `redis-server` (Debian `redis-server`) on 127.0.0.1 and a free port, with nothing
/// saved to disk; killed on drop. It can be stopped and started again on the same port.
pub struct Redis {
    pub port: u16,
    /// `redis://127.0.0.1:PORT/0`
    pub url: String,
    process: Option<Child>,
    dir: tempfile::TempDir,
    /// More `redis-server` arguments (`--cluster-enabled yes` …).
    extra: Vec<String>,
}

impl Redis {
    pub async fn start() -> Redis {
        Redis::start_with(&[]).await
    }

    /// A server with more arguments.
    pub async fn start_with(extra: &[&str]) -> Redis {
        let port = free_port();
        let mut r = Redis {
            port,
            url: format!("redis://127.0.0.1:{port}/0"),
            process: None,
            dir: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        r.restart().await;
        r
    }

    /// `redis-cli -p PORT ARGS…`: its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli").arg("-p").arg(self.port.to_string()).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts the server (again) on its port and waits until it answers.
    pub async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is needed: apt-get install redis-server (scripts/test does)");
        self.process = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        eventually(Duration::from_secs(10), "redis-server answers PING", async || {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else { return false };
            let mut buf = [0u8; 7];
            s.write_all(b"PING\r\n").await.is_ok() && s.read_exact(&mut buf).await.is_ok() && &buf == b"+PONG\r\n"
        })
        .await;
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to the server.
    pub fn signal(&self, signal: &str) {
        let pid = self.process.as_ref().expect("running").id();
        let ok = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().unwrap().success();
        assert!(ok, "kill -{signal} {pid}");
    }

    /// Stops the server (its data goes with it).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

/// A Redis Cluster of real `redis-server --cluster-enabled yes` processes joined by
/// `redis-cli --cluster create`: `masters` primaries, each with `replicas` replicas.
pub async fn redis_cluster(masters: usize, replicas: usize) -> Vec<Redis> {
    let args = [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "1000",
        "--repl-diskless-sync-delay",
        "0",
    ];
    let mut nodes = Vec::new();
    for _ in 0..masters * (1 + replicas) {
        nodes.push(Redis::start_with(&args).await);
    }
    let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
    let replicas = replicas.to_string();
    let mut create = vec!["--cluster", "create"];
    create.extend(addrs.iter().map(String::as_str));
    create.extend(["--cluster-replicas", replicas.as_str(), "--cluster-yes"]);
    let out = nodes[0].cli(&create);
    assert!(out.contains("All 16384 slots covered"), "{out}");
    eventually(Duration::from_secs(30), "the cluster is ok on every node, every replica in sync", async || {
        nodes.iter().all(|n| {
            let replication = n.cli(&["info", "replication"]);
            n.cli(&["cluster", "info"]).contains("cluster_state:ok")
                && (replication.contains("role:master") || replication.contains("master_link_status:up"))
        })
    })
    .await;
    nodes
}

/// The `127.0.0.1:PORT` of the primary serving `key`'s slot, as `node` sees the cluster.
pub fn slot_owner(node: &Redis, key: &str) -> Option<String> {
    let slot: u16 = node.cli(&["cluster", "keyslot", key]).trim().parse().ok()?;
    node.cli(&["cluster", "nodes"])
        .lines()
        .filter(|l| l.contains("master") && !l.contains("fail"))
        .find(|l| {
            l.split_whitespace().skip(8).any(|range| {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                (lo.parse::<u16>().unwrap_or(u16::MAX)..=hi.parse().unwrap_or(0)).contains(&slot)
            })
        })
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|a| a.split('@').next())
        .map(str::to_owned)
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------- configs and components

/// Loads configuration text (no environment variables), panicking with the problems.
pub fn load_config(text: &str) -> Config {
    let var = |_: &str| None;
    config::from_yaml(text, "test", &Environment { var: &var, base_dir: ".".into() }).unwrap_or_else(|e| panic!("{e}"))
}

/// A config channel for a component under test; the sender lives as long as the test process.
pub fn watched(config: Config) -> watch::Receiver<Arc<Config>> {
    let (tx, rx) = watch::channel(Arc::new(config));
    std::mem::forget(tx);
    rx
}

/// An observer on a fresh registry, and the registry to scrape.
pub fn observer(config: &Config) -> (Observer, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new(&config.labels).unwrap());
    (Observer::new(metrics.clone()), metrics)
}

/// Renders a registry as a [`Scrape`].
pub fn scrape_registry(metrics: &Metrics) -> Scrape {
    Scrape::parse(&metrics.render().unwrap())
}

// ---------------------------------------------------------------- the agent, in-process

/// The agent started in-process (`app::start`) on 127.0.0.1:0 from config text.
pub struct Agent {
    pub handle: Handle,
    /// The config text, as written to `config_path`.
    pub text: String,
    pub config_path: PathBuf,
    /// `http://…` of the admin server and of the proxy (when enabled).
    pub admin: String,
    pub proxy: String,
    shutdown: CancellationToken,
    done: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Starts the agent on `yaml`; `admin.listen` and `proxy.listen` default to 127.0.0.1:0.
    pub async fn start(yaml: &str) -> Agent {
        let text = with_local_listeners(yaml);
        let dir = tempfile::tempdir().unwrap();
        let config_path = PathBuf::from(write(dir.path(), "sentinel.yaml", &text));
        let config = config::load(&config_path).unwrap_or_else(|e| panic!("{e}"));
        let listeners = Listeners::bind(&config).await.unwrap();
        let shutdown = CancellationToken::new();
        let opts = Options {
            config,
            config_path: config_path.clone(),
            grace_period: Duration::from_secs(5),
            drain_delay: Duration::ZERO,
        };
        let (handle, done) = app::start(opts, listeners, shutdown.clone()).unwrap();
        let done = tokio::spawn(async move { done.await.unwrap() });
        let admin = format!("http://{}", handle.admin_addr);
        let proxy = handle.proxy_addr.map(|a| format!("http://{a}")).unwrap_or_default();
        Agent { handle, text, config_path, admin, proxy, shutdown, done, _dir: dir }
    }

    /// The agent's metrics now.
    pub fn metrics(&self) -> Scrape {
        scrape_registry(&self.handle.metrics)
    }

    /// Rewrites the config file and reloads it, as SIGHUP does; returns the reload's result.
    pub async fn reload(&self, text: &str) -> Result<(), String> {
        std::fs::write(&self.config_path, text).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.handle.reload.send(tx).await.unwrap();
        rx.await.unwrap().map_err(|e| e.to_string())
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.done).await.unwrap().unwrap();
    }
}

/// Config text whose `admin` and `proxy` sections (block style) listen on 127.0.0.1:0 unless
/// they say where: tests never use fixed ports.
fn with_local_listeners(yaml: &str) -> String {
    let mut out = String::new();
    let mut has_admin = false;
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        out.push_str(line);
        out.push('\n');
        if !line.starts_with([' ', '#']) && !line.is_empty() {
            let section = line.split(':').next().unwrap_or("");
            has_admin |= section == "admin";
            let block = line.trim_end().ends_with(':');
            if block && (section == "admin" || section == "proxy") {
                // Does the section name its own listen address?
                let body: Vec<&str> = lines.clone().take_while(|l| l.starts_with(' ') || l.is_empty()).collect();
                if !body.iter().any(|l| l.trim_start().starts_with("listen:")) {
                    out.push_str("  listen: 127.0.0.1:0\n");
                }
            }
        }
    }
    if !has_admin {
        out.push_str("admin:\n  listen: 127.0.0.1:0\n");
    }
    out
}

#[test]
fn listeners_default_to_port_0() {
    let t = with_local_listeners("upstream:\n  base_url: http://x\nproxy:\n  enabled: true\n");
    assert_eq!(
        t,
        "upstream:\n  base_url: http://x\nproxy:\n  listen: 127.0.0.1:0\n  enabled: true\nadmin:\n  listen: 127.0.0.1:0\n"
    );
    let kept = with_local_listeners("admin:\n  listen: 127.0.0.1:1\n");
    assert_eq!(kept, "admin:\n  listen: 127.0.0.1:1\n");
}

// ---------------------------------------------------------------- the agent, as a process

/// A running `modelslab-sentinel` process, killed on drop.
pub struct Process {
    child: Child,
    log: Arc<Mutex<String>>,
}

/// The agent process started by [`Process::agent`], with its addresses.
pub struct AgentProcess {
    pub process: Process,
    pub admin: String,
    /// Empty when the proxy is off.
    pub proxy: String,
    pub config_path: String,
    pub dir: tempfile::TempDir,
}

impl AgentProcess {
    /// The agent's metrics, scraped over HTTP.
    pub async fn metrics(&self) -> Scrape {
        scrape(&self.admin).await
    }
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

    /// Writes `yaml` (listeners on 127.0.0.1:0 unless given) to a temporary file and runs the
    /// agent on it with `extra` arguments; waits until it logs its addresses.
    pub fn agent(yaml: &str, extra: &[&str], envs: &[(&str, &str)]) -> AgentProcess {
        let text = with_local_listeners(yaml);
        let dir = tempfile::tempdir().unwrap();
        let config_path = write(dir.path(), "sentinel.yaml", &text);
        let mut args = vec!["run", "--config", &config_path];
        args.extend_from_slice(extra);
        let var = |name: &str| envs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned());
        let proxy_on = config::from_yaml(&text, "test", &Environment { var: &var, base_dir: dir.path().into() })
            .is_ok_and(|c| c.proxy.enabled);
        let process = Process::start(&args, envs);
        let admin = format!("http://{}", process.admin_addr());
        let proxy = if proxy_on {
            format!("http://{}", process.wait_for_log("proxy listening on http://", Duration::from_secs(10)))
        } else {
            String::new()
        };
        AgentProcess { process, admin, proxy, config_path, dir }
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
        let mut found = None;
        eventually_blocking(timeout, &format!("a log line with {prefix:?}"), || {
            let log = self.log();
            found = log.find(prefix).map(|i| {
                let rest = &log[i + prefix.len()..];
                rest.split(|c: char| c.is_whitespace() || c == '"').next().unwrap_or("").to_owned()
            });
            found.is_some()
        });
        found.unwrap_or_default()
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
        let mut status = None;
        let child = &mut self.child;
        let log = self.log.clone();
        eventually_blocking(timeout, "the process exits", || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        // Let the reader threads drain what the process wrote last.
        std::thread::sleep(Duration::from_millis(100));
        status.unwrap_or_else(|| panic!("process still running; log:\n{}", log.lock().unwrap()))
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

/// A port free right now (for programs that cannot be told to listen on port 0).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

// ---------------------------------------------------------------- HTTP

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

/// Sends `request` as raw bytes to `addr` (`http://` optional) and reads until the server closes
/// the connection (or 5 s pass): for requests no HTTP client would send.
pub async fn raw_http(addr: &str, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr.trim_start_matches("http://")).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A hand-written TCP server on 127.0.0.1:0, for misbehaviour no HTTP library would produce:
/// `per_connection` runs on its own task for each accepted connection. Returns `http://…`.
pub async fn tcp_server<F, Fut>(per_connection: F) -> String
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(per_connection(stream));
        }
    });
    url
}

/// A complete `200 OK` HTTP/1.1 answer with a JSON `body`, for hand-written servers.
pub fn json_200(body: &[u8]) -> Vec<u8> {
    let mut out =
        format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len())
            .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Reads one HTTP/1.1 request from `stream` for a hand-written test server: its head (request
/// line and headers, as text) and its body, framed by `Content-Length` or `chunked` (small test
/// bodies only). `buf` carries bytes read past this request over to the next call. `None` at EOF.
pub async fn read_request(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    async fn more(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<()> {
        let mut chunk = [0u8; 16 * 1024];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                Some(())
            }
        }
    }
    let end = loop {
        match buf.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(end) => break end,
            None => more(stream, buf).await?,
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let lower = head.to_ascii_lowercase();
    buf.drain(..end + 4);
    if lower.contains("transfer-encoding: chunked") {
        let mut body = Vec::new();
        loop {
            let line = loop {
                match buf.windows(2).position(|w| w == b"\r\n") {
                    Some(i) => break i,
                    None => more(stream, buf).await?,
                }
            };
            let size = usize::from_str_radix(String::from_utf8_lossy(&buf[..line]).trim(), 16).ok()?;
            while buf.len() < line + 2 + size + 2 {
                more(stream, buf).await?;
            }
            body.extend_from_slice(&buf[line + 2..line + 2 + size]);
            buf.drain(..line + 2 + size + 2);
            if size == 0 {
                return Some((head, body));
            }
        }
    }
    let len: usize =
        lower.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    while buf.len() < len {
        more(stream, buf).await?;
    }
    let body = buf.drain(..len).collect();
    Some((head, body))
}

/// POSTs JSON and reads a JSON answer.
pub async fn post_json(url: &str, body: &serde_json::Value) -> serde_json::Value {
    let r = http().post(url).json(body).send().await.unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let text = r.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("POST {url}: not JSON ({e}): {text}"))
}

/// `GET {admin}/metrics`, parsed.
pub async fn scrape(admin: &str) -> Scrape {
    let (code, text) = get(&format!("{admin}/metrics")).await;
    assert_eq!(code, 200, "{text}");
    Scrape::parse(&text)
}

/// Polls a job's fetch endpoint (`fetch_url`) every `every` until it answers something other than
/// `processing`, at most `tries` times; returns the last JSON answer (`Null` if none was JSON).
/// Failed and non-JSON answers (faults the emulator injects) count as tries.
pub async fn poll_job(fetch_url: &str, body: &serde_json::Value, every: Duration, tries: u32) -> serde_json::Value {
    let client = http();
    let mut last = serde_json::Value::Null;
    for _ in 0..tries {
        if let Ok(r) = client.post(fetch_url).json(body).send().await {
            if let Ok(v) = r.json::<serde_json::Value>().await {
                if v["status"] != "processing" {
                    return v;
                }
                last = v;
            }
        }
        tokio::time::sleep(every).await;
    }
    last
}

// ---------------------------------------------------------------- waiting

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
pub async fn eventually(timeout: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within {timeout:?}: {what}");
}

/// Reads `read` until `done` holds of what it read, or `timeout` passes: the last reading either
/// way, for the caller's assertion to show.
pub async fn settled<T>(timeout: Duration, mut read: impl AsyncFnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let value = read().await;
        if done(&value) || std::time::Instant::now() >= deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// [`eventually`] for code outside the runtime (process logs and exits).
pub fn eventually_blocking(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("not within {timeout:?}: {what}");
}

// ---------------------------------------------------------------- real tools

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

// ---------------------------------------------------------------- the chart

/// The helm binary: `$HELM`, else the one scripts/test installs, else `helm` on the PATH.
pub fn helm() -> PathBuf {
    if let Ok(h) = std::env::var("HELM") {
        return h.into();
    }
    let local = Path::new("target/tools/bin/helm");
    if local.exists() { local.to_owned() } else { "helm".into() }
}

/// Runs `helm template RELEASE CHART` with values files and `--set`s; the objects, or helm's
/// error output.
pub fn render_chart(
    chart: &str,
    release: &str,
    files: &[&str],
    sets: &[&str],
) -> Result<Vec<serde_json::Value>, String> {
    let mut cmd = Command::new(helm());
    cmd.args(["template", release, chart, "--namespace", "observability"]);
    for f in files {
        cmd.args(["-f", f]);
    }
    for s in sets {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("helm is needed: scripts/test installs it into target/tools/bin");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8(out.stdout).unwrap();
    let mut objects = Vec::new();
    for doc in text.split("\n---") {
        let doc = doc.trim_start_matches('-').trim();
        if doc.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
            continue;
        }
        let v: serde_json::Value = config::parse_document(doc).unwrap_or_else(|e| panic!("{e}\n{doc}"));
        if !v.is_null() {
            objects.push(v);
        }
    }
    Ok(objects)
}
