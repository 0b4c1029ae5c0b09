//! The image, built and run as the chart runs it (SPEC §9.5). With Debian's `podman` and `runc`:
//!
//! 1. a runtime base is assembled from what distroless/cc holds (the dynamic libraries the binary
//!    links, CA certificates, `/etc/passwd` with nonroot 65532, no shell), and the Dockerfile's
//!    `runtime` stage is built on it from the host-built binary (`--build-context build=…`);
//! 2. the chart is rendered (`helm template` with a key and default values, the upstream pointed
//!    at the emulator, the proxy on), and the Deployment's container is started the way the pod
//!    runs it: its `args`, its `env` (Secret and field references resolved from the render), its
//!    ConfigMap mounted read-only where it mounts it, read-only root filesystem, the user, group
//!    and capabilities of its security contexts, no new privileges;
//! 3. it is checked as the kubelet would: `/readyz` and `/healthz` on the port the probes name,
//!    `/metrics` with probe results, the proxy on its port; after a minute of probes its RSS;
//!    then `SIGTERM`: `/readyz` 503 through the drain delay, exit 0 within
//!    `terminationGracePeriodSeconds`.
//!
//! The emulator runs from the same image (`sim`), and so does `demo`. Host networking: every
//! address is 127.0.0.1. Where containers cannot run at all the test says so and passes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use serde_json::Value;

const IMAGE: &str = "localhost/modelslab-sentinel:image-test";
const BASE: &str = "localhost/modelslab-sentinel-runtime-base:image-test";
const KEY: &str = "sk-image-test-key-4f1c";
/// The pod's memory goal after a minute of probes.
const RSS_GOAL_MIB: f64 = 32.0;

/// `podman` with the flags this machine needs (DEVELOPERS.md): runc, cgroupfs, no default ulimits.
struct Podman {
    conf: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        let conf = tempfile::tempdir().unwrap();
        std::fs::write(conf.path().join("containers.conf"), "[containers]\ndefault_ulimits = []\n").unwrap();
        Podman { conf }
    }

    fn command(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", self.conf.path().join("containers.conf"))
            .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"])
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap_or_else(|e| panic!("podman {args:?}: {e}"))
    }

    /// Runs and asserts success; stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "podman {args:?}:\n{}{}", text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    }

    /// Why containers cannot run here, if they cannot.
    fn unavailable(&self) -> Option<String> {
        match self.command().args(["info", "--format", "{{.Host.OCIRuntime.Name}}"]).output() {
            Err(e) => Some(format!("podman is not installed ({e}); scripts/test installs podman and runc")),
            Ok(o) if !o.status.success() => Some(format!("podman cannot run here: {}", text(&o.stderr))),
            Ok(_) => None,
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A container removed when dropped.
struct Container<'a> {
    podman: &'a Podman,
    name: String,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self.podman.run(&["rm", "-f", "-t", "0", &self.name]);
    }
}

impl Container<'_> {
    fn logs(&self) -> String {
        let out = self.podman.run(&["logs", &self.name]);
        format!("{}{}", text(&out.stdout), text(&out.stderr))
    }

    /// Waits until `url` answers 200 (at most `within`); a container that stopped, or one that
    /// never answers, fails the test with its logs.
    async fn answers(&self, url: &str, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if status_of(url).await == Some(200) {
                return started.elapsed();
            }
            let running = self.podman.run(&["inspect", "--format", "{{.State.Running}}", &self.name]);
            let stopped = text(&running.stdout).trim() != "true";
            assert!(!stopped && started.elapsed() < within, "{} does not answer {url}:\n{}", self.name, self.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.podman.ok(&["inspect", "--format", "{{.State.Pid}}", &self.name]).trim().parse().unwrap()
    }
}

fn copy_mode(from: &Path, to: &Path, mode: u32) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The runtime base: what distroless/cc-debian12:nonroot holds, from this machine's Debian.
fn assemble_base(podman: &Podman, dir: &Path) {
    let root = dir.join("rootfs");
    // The shared libraries the binary links, and its loader, as `ldd` names them.
    let ldd = Command::new("ldd").arg(BIN).output().unwrap();
    for line in text(&ldd.stdout).lines() {
        let path = line.split("=>").last().unwrap().split_whitespace().next().unwrap_or("");
        if path.starts_with('/') {
            copy_mode(Path::new(path), &root.join(path.trim_start_matches('/')), 0o755);
        }
    }
    copy_mode(Path::new("/etc/ssl/certs/ca-certificates.crt"), &root.join("etc/ssl/certs/ca-certificates.crt"), 0o644);
    let files = [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
        ),
        ("etc/group", "root:x:0:\nnonroot:x:65532:\n"),
        ("etc/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n"),
    ];
    for (path, body) in files {
        std::fs::create_dir_all(root.join(path).parent().unwrap()).unwrap();
        std::fs::write(root.join(path), body).unwrap();
    }
    for (d, mode) in [("tmp", 0o1777), ("home/nonroot", 0o700)] {
        std::fs::create_dir_all(root.join(d)).unwrap();
        std::fs::set_permissions(root.join(d), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::write(dir.join("Containerfile"), "FROM scratch\nCOPY rootfs/ /\nUSER 65532:65532\n").unwrap();
    podman.ok(&["build", "-q", "-t", BASE, dir.to_str().unwrap()]);
}

/// The Dockerfile's runtime stage on the local base, from the host-built binary (stripped).
fn build_image(podman: &Podman, dir: &Path) {
    let binary = dir.join("target/release/modelslab-sentinel");
    copy_mode(Path::new(BIN), &binary, 0o755);
    let _ = Command::new("strip").arg(&binary).status();
    let context = format!("build={}", dir.display());
    let base = format!("RUNTIME_IMAGE={BASE}");
    podman.ok(&[
        "build",
        "-q",
        "--build-context",
        &context,
        "--build-arg",
        &base,
        "--target",
        "runtime",
        "-t",
        IMAGE,
        ".",
    ]);
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> impl Iterator<Item = &'a Value> {
    objects.iter().filter(move |o| o["kind"] == kind)
}

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    of_kind(objects, kind).find(|o| o["metadata"]["name"] == name).unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// What `podman run` needs to start the Deployment's container as its pod does.
struct PodSpec {
    /// The image the pod runs.
    image: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// (directory with the ConfigMap's files, where it is mounted).
    mounts: Vec<(tempfile::TempDir, String)>,
    flags: Vec<String>,
    /// Container ports by name.
    ports: BTreeMap<String, u16>,
    readiness: (String, u16),
    liveness: (String, u16),
    grace: Duration,
    drain: Duration,
}

/// Reads the pod out of the render: nothing here repeats the chart's values.
fn pod_spec(objects: &[Value]) -> PodSpec {
    let deployment = of_kind(objects, "Deployment").next().unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array().into_iter().flatten().map(|s| s.as_str().unwrap().to_owned()).collect()
    };
    let args = strings(&c["args"]);
    // Env, as the kubelet resolves it: Secret and ConfigMap keys, fields, $(VAR) of earlier ones.
    let mut env: Vec<(String, String)> = Vec::new();
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap().to_owned();
        let value = if let Some(v) = e["value"].as_str() {
            env.iter().fold(v.to_owned(), |v, (k, val)| v.replace(&format!("$({k})"), val))
        } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
            let secret = named(objects, "Secret", r["name"].as_str().unwrap());
            let key = r["key"].as_str().unwrap();
            match (secret["data"][key].as_str(), secret["stringData"][key].as_str()) {
                (Some(b64), _) => text(&base64::engine::general_purpose::STANDARD.decode(b64).unwrap()),
                (_, Some(s)) => s.to_owned(),
                _ => panic!("Secret {} has no {key}", r["name"]),
            }
        } else if let Some(r) = e["valueFrom"]["configMapKeyRef"].as_object() {
            let cm = named(objects, "ConfigMap", r["name"].as_str().unwrap());
            cm["data"][r["key"].as_str().unwrap()].as_str().unwrap().to_owned()
        } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match path {
                "metadata.name" => "modelslab-sentinel-image-test".to_owned(),
                "metadata.namespace" => "observability".to_owned(),
                other => panic!("field {other} not resolved by this test"),
            }
        } else {
            panic!("env {name}: a source this test does not resolve: {e}");
        };
        env.push((name, value));
    }
    // Volumes: ConfigMaps written out, readable by the pod's user (as the kubelet projects them).
    let mut mounts = Vec::new();
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == m["name"]).unwrap();
        let cm = named(objects, "ConfigMap", volume["configMap"]["name"].as_str().expect("a ConfigMap volume"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for (file, body) in cm["data"].as_object().unwrap() {
            std::fs::write(dir.path().join(file), body.as_str().unwrap()).unwrap();
            std::fs::set_permissions(dir.path().join(file), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        assert_eq!(m["readOnly"], true, "the config is mounted read-only");
        mounts.push((dir, m["mountPath"].as_str().unwrap().to_owned()));
    }
    // The security contexts, as podman flags.
    let (psc, sc) = (&pod["securityContext"], &c["securityContext"]);
    let user = sc["runAsUser"].as_u64().or(psc["runAsUser"].as_u64()).expect("a user");
    let group = sc["runAsGroup"].as_u64().or(psc["runAsGroup"].as_u64()).expect("a group");
    let mut flags = vec![format!("--user={user}:{group}")];
    if sc["readOnlyRootFilesystem"] == true {
        flags.extend(["--read-only".to_owned(), "--read-only-tmpfs=false".to_owned()]);
    }
    for cap in strings(&sc["capabilities"]["drop"]) {
        flags.push(format!("--cap-drop={cap}"));
    }
    if sc["allowPrivilegeEscalation"] == false {
        flags.push("--security-opt=no-new-privileges".to_owned());
    }
    let ports: BTreeMap<String, u16> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p["containerPort"].as_u64().unwrap() as u16))
        .collect();
    let probe = |p: &Value| {
        let get = &p["httpGet"];
        let port = match &get["port"] {
            Value::String(name) => ports[name],
            n => n.as_u64().unwrap() as u16,
        };
        (get["path"].as_str().unwrap().to_owned(), port)
    };
    let flag = |name: &str| {
        args.iter().find_map(|a| a.strip_prefix(&format!("--{name}="))).map(|d| humantime::parse_duration(d).unwrap())
    };
    PodSpec {
        image: c["image"].as_str().unwrap().to_owned(),
        readiness: probe(&c["readinessProbe"]),
        liveness: probe(&c["livenessProbe"]),
        grace: Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().unwrap()),
        drain: flag("drain-delay").unwrap_or_default(),
        args,
        env,
        mounts,
        flags,
        ports,
    }
}

async fn status_of(url: &str) -> Option<u16> {
    http().get(url).timeout(Duration::from_secs(2)).send().await.ok().map(|r| r.status().as_u16())
}

impl<'a> Container<'a> {
    /// Runs `args` of `podman run -d --name NAME --network=host …` (after the name).
    fn start(podman: &'a Podman, name: String, args: &[String]) -> Container<'a> {
        let mut run: Vec<String> = ["run", "-d", "--name", &name, "--network=host"].map(String::from).to_vec();
        run.extend(args.iter().cloned());
        let run: Vec<&str> = run.iter().map(String::as_str).collect();
        podman.ok(&run);
        Container { podman, name }
    }

    /// A command of the image, locked down as the pod is (read-only, no capabilities).
    fn of_image(podman: &'a Podman, name: String, env: &[String], command: &[&str]) -> Container<'a> {
        let mut args: Vec<String> =
            ["--read-only", "--read-only-tmpfs=false", "--cap-drop=ALL"].map(String::from).to_vec();
        args.extend(env.iter().map(|e| format!("--env={e}")));
        args.push(IMAGE.to_owned());
        args.extend(command.iter().map(|c| (*c).to_owned()));
        Container::start(podman, name, &args)
    }

    /// The Deployment's container, as its pod runs it.
    fn of_pod(podman: &'a Podman, name: String, pod: &PodSpec) -> Container<'a> {
        let mut args = pod.flags.clone();
        args.extend(pod.env.iter().map(|(k, v)| format!("--env={k}={v}")));
        args.extend(pod.mounts.iter().map(|(dir, at)| format!("--volume={}:{at}:ro", dir.path().display())));
        args.push(pod.image.clone());
        args.extend(pod.args.iter().cloned());
        Container::start(podman, name, &args)
    }

    /// Resident memory now, from the host's view of the container's process.
    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next());
        kib.unwrap().parse::<f64>().unwrap() / 1024.0
    }

    /// Waits for the container to exit (blocking `podman wait`, off the runtime): its code.
    async fn exit_code(&self) -> i32 {
        let mut cmd = self.podman.command();
        cmd.args(["wait", &self.name]);
        tokio::task::spawn_blocking(move || text(&cmd.output().unwrap().stdout).trim().parse().unwrap()).await.unwrap()
    }
}

/// The chart rendered with a key and its defaults: the API is the emulator, the proxy on, ports
/// of their own (host networking), the image just built.
fn render(dir: &Path, sim_url: &str, admin_port: u16, proxy_port: u16) -> PodSpec {
    let values = write(
        dir,
        "values.yaml",
        &format!(
            "image: {{ repository: localhost/modelslab-sentinel, tag: image-test }}\napiKey: {{ value: {KEY} }}\n\
             config:\n  upstream: {{ base_url: \"{sim_url}\" }}\n  admin: {{ listen: \"0.0.0.0:{admin_port}\" }}\n\
             \x20 proxy: {{ enabled: true, listen: \"0.0.0.0:{proxy_port}\" }}\n  status_page: {{ url: \"{sim_url}/api/v2/summary.json\" }}\n"
        ),
    );
    let objects =
        render_chart("helm/modelslab-sentinel", "sentinel", &[&values], &[]).unwrap_or_else(|e| panic!("{e}"));
    let pod = pod_spec(&objects);
    assert_eq!((pod.ports["http-metrics"], pod.ports["http-proxy"]), (admin_port, proxy_port));
    assert_eq!(pod.image, IMAGE, "the chart runs the image just built");
    pod
}

/// What SIGTERM did: when `/readyz` went 503, when the container exited and with what code.
struct Stopped {
    drained: Option<Duration>,
    served_while_draining: bool,
    exited: Duration,
    code: i32,
}

/// SIGTERM, then `/readyz` watched through the drain delay (metrics still served), then the exit.
async fn terminate(agent: &Container<'_>, pod: &PodSpec, ready: &str, admin: &str) -> Stopped {
    // The clock starts before the signal is sent, so it never runs behind the agent's own.
    let term = Instant::now();
    agent.podman.ok(&["kill", "--signal", "TERM", &agent.name]);
    let (mut drained, mut served_while_draining) = (None, false);
    while term.elapsed() < pod.drain {
        let asked = term.elapsed();
        match status_of(ready).await {
            Some(503) => {
                drained.get_or_insert(term.elapsed());
                served_while_draining |= status_of(&format!("{admin}/metrics")).await == Some(200);
            }
            // Gone in the last second is the drain ending: the agent's delay and ours are timed
            // apart, and a request takes its time to reach it.
            None if drained.is_some() && asked + Duration::from_secs(1) >= pod.drain => break,
            other => {
                assert!(drained.is_none(), "ready again (or gone) while draining, {asked:?} after SIGTERM: {other:?}");
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let code = agent.exit_code().await;
    Stopped { drained, served_while_draining, exited: term.elapsed(), code }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_runs_as_the_chart_runs_it() {
    let podman = Podman::new();
    if let Some(why) = podman.unavailable() {
        println!("skipped: containers cannot run on this machine: {why}");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let started = Instant::now();
    assemble_base(&podman, &work.path().join("base"));
    build_image(&podman, &work.path().join("context"));
    let built = started.elapsed();
    let size: u64 = podman.ok(&["image", "inspect", "--format", "{{.Size}}", IMAGE]).trim().parse().unwrap();

    // The emulator, from the same image.
    let sim_port = free_port();
    let listen = format!("127.0.0.1:{sim_port}");
    let sim = Container::of_image(&podman, format!("sentinel-sim-{sim_port}"), &[], &["sim", "--listen", &listen]);
    let sim_url = format!("http://{listen}");
    sim.answers(&format!("{sim_url}/_sim/stats"), Duration::from_secs(20)).await;

    let (admin_port, proxy_port) = (free_port(), free_port());
    let pod = render(work.path(), &sim_url, admin_port, proxy_port);
    let running = Instant::now();
    let agent = Container::of_pod(&podman, format!("sentinel-agent-{admin_port}"), &pod);

    // What the kubelet checks, on the ports its probes name.
    let base = |port: u16| format!("http://127.0.0.1:{port}");
    let ready = format!("{}{}", base(pod.readiness.1), pod.readiness.0);
    agent.answers(&ready, Duration::from_secs(30)).await;
    let became_ready = running.elapsed();
    let live = format!("{}{}", base(pod.liveness.1), pod.liveness.0);
    assert_eq!(status_of(&live).await, Some(200), "{}", agent.logs());
    // The proxy on the chart's proxy port, the key from the Secret.
    let (admin, proxy) = (base(pod.ports["http-metrics"]), base(pod.ports["http-proxy"]));
    let answer = post_json(
        &format!("{proxy}/api/v6/images/text2img"),
        &serde_json::json!({ "key": KEY, "model_id": "flux", "prompt": "a lighthouse" }),
    )
    .await;
    assert!(answer["status"] == "processing" || answer["status"] == "success", "{answer}");
    // The chart's probes (their first runs are spread over their interval) ran against the
    // emulator; the status page is read.
    let validation = |m: &Scrape| m.metric("modelslab_probe_success").label("probe", "text2img-validation").value();
    let m = settled(
        Duration::from_secs(75),
        async || scrape(&admin).await,
        |m: &Scrape| validation(m) == Some(1.0) && m.metric("modelslab_status_page_up").value() == Some(1.0),
    )
    .await;
    assert_eq!(validation(&m), Some(1.0), "{}\n{}", m.text(), agent.logs());
    // The other default probe runs every 5 minutes: scheduled, its series there from the start.
    assert!(m.text().contains("probe=\"auth-rejects-bad-key\""));
    // A minute of probes, then its memory.
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(running.elapsed())).await;
    let rss_mib = agent.rss_mib();
    assert_eq!(validation(&scrape(&admin).await), Some(1.0));

    let stopped = terminate(&agent, &pod, &ready, &admin).await;
    let logs = agent.logs();
    assert_eq!(stopped.code, 0, "{logs}");
    assert!(stopped.drained.is_some_and(|d| d < Duration::from_secs(2)), "/readyz 503 at once: {:?}", stopped.drained);
    assert!(stopped.served_while_draining, "metrics still served during the drain delay");
    assert!(
        stopped.exited >= pod.drain && stopped.exited < pod.grace,
        "exit after {:?}: drain {:?}, grace {:?}",
        stopped.exited,
        pod.drain,
        pod.grace
    );
    assert!(!logs.contains(KEY), "the key is never logged");
    assert!(!logs.contains("Read-only file system") && !logs.contains("os error 30"), "no write to /: {logs}");
    assert!(rss_mib <= RSS_GOAL_MIB, "RSS {rss_mib:.1} MiB after a minute of probes");

    // `demo` from the image too (host networking, its admin port told).
    let demo_port = free_port();
    let demo = Container::of_image(
        &podman,
        format!("sentinel-demo-{demo_port}"),
        &[format!("DEMO_ADMIN_PORT={demo_port}")],
        &["demo", "--duration", "20s"],
    );
    demo.answers(&format!("http://127.0.0.1:{demo_port}/readyz"), Duration::from_secs(20)).await;

    let report = format!(
        "| image | size | built (base + runtime stage) | ready after `run` | RSS after a minute of probes | SIGTERM → /readyz 503 | SIGTERM → exit 0 | drain / grace |\n\
         |---|---|---|---|---|---|---|---|\n\
         | `{IMAGE}` (binary: the test profile's, stripped) | {:.1} MiB | {:.1} s | {:.2} s | {rss_mib:.1} MiB (goal ≤ {RSS_GOAL_MIB} MiB) | {:.2} s | {:.1} s | {} s / {} s |\n",
        size as f64 / 1_048_576.0,
        built.as_secs_f64(),
        became_ready.as_secs_f64(),
        stopped.drained.unwrap_or_default().as_secs_f64(),
        stopped.exited.as_secs_f64(),
        pod.drain.as_secs(),
        pod.grace.as_secs(),
    );
    let _ = std::fs::create_dir_all("target");
    std::fs::write("target/image-report.md", &report).unwrap();
    println!("{report}");
    drop((demo, agent, sim));
    let _ = podman.run(&["rmi", "-f", IMAGE, BASE]);
}
