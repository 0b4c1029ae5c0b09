#!/usr/bin/env python3
"""1,000 probes at a 1 s interval against the emulator: the agent vs blackbox_exporter.

Both run the same check (POST text2img without a prompt, expect HTTP 400 and the documented
message) against the same emulator, one after the other, for the same window. blackbox_exporter
is driven the way it runs in production: a real Prometheus scraping 1,000 /probe targets every
second. Probes done are counted by the emulator itself (neutral for both), CPU from /proc.

Usage: bench/probes.py [--probes 1000] [--seconds 30]
Needs: target/release/modelslab-sentinel, prometheus, prometheus-blackbox-exporter.
"""
import argparse, json, os, re, socket, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import cpu_seconds, free_port, rss_mib, stop, wait_http  # noqa: E402

BIN = "target/release/modelslab-sentinel"






def sim_requests(sim):
    with urllib.request.urlopen(f"http://{sim}/_sim/stats", timeout=5) as r:
        return json.load(r)["by_status"].get("400", 0)


def measure(name, pid, sim, warmup, seconds):
    time.sleep(warmup)
    c0, n0, t0 = cpu_seconds(pid), sim_requests(sim), time.time()
    time.sleep(seconds)
    c1, n1, t1 = cpu_seconds(pid), sim_requests(sim), time.time()
    probes = n1 - n0
    cpu = c1 - c0
    return {
        "name": name,
        "probes_per_s": probes / (t1 - t0),
        "cpu_percent": 100 * cpu / (t1 - t0),
        "cpu_us_per_probe": 1e6 * cpu / max(probes, 1),
        "rss_mib": rss_mib(pid),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--probes", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--warmup", type=float, default=5)
    a = ap.parse_args()
    for tool in (BIN,):
        if not os.path.exists(tool):
            sys.exit(f"{tool} missing: cargo build --release")
    d = tempfile.mkdtemp()
    procs = []
    try:
        sim_port = free_port()
        sim = f"127.0.0.1:{sim_port}"
        procs.append(subprocess.Popen([BIN, "sim", "--listen", sim], stderr=subprocess.DEVNULL))
        wait_http(f"http://{sim}/_sim/stats")

        # --- the agent
        admin = f"127.0.0.1:{free_port()}"
        lines = [f"upstream:\n  base_url: http://{sim}\n  api_key: bench\n  timeout: 5s\nadmin:\n  listen: {admin}\n"
                 "telemetry:\n  log_level: warn\nprobes:\n"]
        for i in range(a.probes):
            lines.append(f"  - name: p{i}\n    interval: 1s\n    timeout: 900ms\n"
                         "    request: { path: /api/v6/images/text2img, body: { model_id: flux } }\n"
                         "    expect: { http_status: [400], message_matches: \"prompt is required\" }\n")
        cfg = os.path.join(d, "agent.yaml")
        open(cfg, "w").write("".join(lines))
        agent = subprocess.Popen([BIN, "run", "--config", cfg], stderr=subprocess.DEVNULL)
        procs.append(agent)
        wait_http(f"http://{admin}/readyz")
        ours = measure("modelslab-sentinel", agent.pid, sim, a.warmup, a.seconds)
        agent.terminate(); agent.wait(10)

        # --- blackbox_exporter, scraped by a real Prometheus
        bb_port = free_port()
        bb_cfg = os.path.join(d, "blackbox.yml")
        open(bb_cfg, "w").write(
            "modules:\n  validation:\n    prober: http\n    timeout: 900ms\n    http:\n      method: POST\n"
            "      headers: { Content-Type: application/json }\n"
            "      body: '{\"key\":\"bench\",\"model_id\":\"flux\"}'\n"
            "      valid_status_codes: [400]\n      fail_if_body_not_matches_regexp: [\"prompt is required\"]\n")
        bb = subprocess.Popen(["prometheus-blackbox-exporter", f"--config.file={bb_cfg}",
                               f"--web.listen-address=127.0.0.1:{bb_port}", "--log.level=warn"],
                              stderr=subprocess.DEVNULL)
        procs.append(bb)
        wait_http(f"http://127.0.0.1:{bb_port}/metrics")
        targets = ",".join(f"'http://{sim}/api/v6/images/text2img?n={i}'" for i in range(a.probes))
        prom_cfg = os.path.join(d, "prometheus.yml")
        open(prom_cfg, "w").write(
            "global: { scrape_interval: 1s, scrape_timeout: 900ms }\nscrape_configs:\n"
            "  - job_name: blackbox\n    metrics_path: /probe\n    params: { module: [validation] }\n"
            f"    static_configs: [ {{ targets: [{targets}] }} ]\n"
            "    relabel_configs:\n"
            "      - { source_labels: [__address__], target_label: __param_target }\n"
            "      - { source_labels: [__param_target], target_label: instance }\n"
            f"      - {{ target_label: __address__, replacement: '127.0.0.1:{bb_port}' }}\n")
        prom_port = free_port()
        prom = subprocess.Popen(["prometheus", f"--config.file={prom_cfg}", f"--storage.tsdb.path={d}/tsdb",
                                 f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                                stderr=subprocess.DEVNULL)
        procs.append(prom)
        wait_http(f"http://127.0.0.1:{prom_port}/-/ready")
        theirs = measure("blackbox_exporter", bb.pid, sim, a.warmup, a.seconds)
    finally:
        stop(procs)

    print(f"{a.probes} probes at 1 s, {a.seconds:.0f} s window, same emulator:")
    print(f"{'':22} {'probes/s':>9} {'CPU %':>7} {'CPU µs/probe':>13} {'RSS MiB':>8}")
    for r in (ours, theirs):
        print(f"{r['name']:22} {r['probes_per_s']:9.0f} {r['cpu_percent']:7.1f} {r['cpu_us_per_probe']:13.0f} {r['rss_mib']:8.1f}")
    if theirs["probes_per_s"] == 0 or theirs["cpu_us_per_probe"] == 0:
        sys.exit("blackbox_exporter ran no probes in the window: Prometheus was still starting (raise --warmup)")
    print(f"CPU per probe, agent / blackbox_exporter: {ours['cpu_us_per_probe'] / theirs['cpu_us_per_probe']:.2f}")


if __name__ == "__main__":
    main()
