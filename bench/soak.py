#!/usr/bin/env python3
"""Soak: the agent with probes, proxy and status page against a faulty emulator, under steady
proxy load with async jobs, for 30 minutes (or --minutes N; CI runs 3).

Every 10 s it samples the agent's RSS and open file descriptors (from /proc) and its tracked
jobs (`modelslab_jobs_in_flight`). At the end it checks, and exits 1 if any check fails:
  - RSS levels off: the last third's peak is within 10 % (+2 MiB) of the middle third's peak;
  - open file descriptors stay bounded: the last third's peak within the middle third's + 16;
  - tracked jobs stay bounded: never above jobs.max_tracked, last third within the middle's;
  - the request counters are exact: modelslab_requests_total{source="proxy"} equals the number
    of requests the client sent and got an answer to (every one did: the client's timeout is
    longer than the proxy's upstream_timeout);
  - the agent is healthy at the end (/healthz) and its probes and status page kept running.

Usage: bench/soak.py [--minutes 30] [--clients 4] [--bin target/release/modelslab-sentinel]
Needs the agent built (cargo build --release; CI soaks the debug build the tests made).
"""
import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import free_port, rss_mib, stop, wait_http  # noqa: E402

BIN = "target/release/modelslab-sentinel"
SAMPLE = 10  # seconds between samples
MAX_TRACKED = 2000

# Faults of every kind, jobs of 1-8 s, a degraded status page.
SCENARIO = """\
seed: 7
latency: { min: 2ms, max: 40ms }
job_duration: { min: 1s, max: 8s }
sync_ratio: 0.2
failure_ratio: 0.1
faults: { server_error: 0.05, unavailable: 0.03, gateway_html: 0.02, soft_error: 0.03, timeout: 0.005, reset: 0.01 }
status_page: degraded_performance
account: premium
wallet: { balance: 1000000000, cost: 0.002 }
"""


def config(sim, admin, proxy):
    return f"""\
upstream:
  base_url: http://127.0.0.1:{sim}
  api_key: soak-agent-key
  timeout: 5s
admin:
  listen: 127.0.0.1:{admin}
proxy:
  enabled: true
  listen: 127.0.0.1:{proxy}
  upstream_timeout: 3s
jobs:
  ttl: 60s
  max_tracked: {MAX_TRACKED}
telemetry:
  log_level: warn
labels:
  models: [flux, sdxl]
probes:
  - name: validation
    interval: 2s
    timeout: 1500ms
    request: {{ path: /api/v6/images/text2img, body: {{ model_id: flux }} }}
    expect: {{ http_status: [400, 200], status: error, error_class: bad_request }}
  - name: generation
    interval: 15s
    timeout: 14s
    request: {{ path: /api/v6/images/text2img, body: {{ model_id: flux, prompt: soak, width: 256, height: 256 }} }}
    follow: {{ fetch_path: "/api/v6/images/fetch/{{id}}", poll_interval: 500ms, max_wait: 12s }}
    expect: {{ status: success, output: {{ count: 1 }} }}
status_page:
  url: http://127.0.0.1:{sim}/status
  interval: 2s
  timeout: 1s
"""


class Load:
    """Clients submitting generations through the proxy and polling their jobs."""

    def __init__(self, port, clients):
        self.port, self.clients = port, clients
        self.answered = 0
        self.unanswered = 0
        self.statuses = {}
        self.lock = threading.Lock()
        self.running = True
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(clients)]

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self):
        self.running = False
        for t in self.threads:
            t.join(30)

    def send(self, conn, path, body):
        """One request; its status, or None when no answer came (then the connection is new)."""
        try:
            conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
            r = conn.getresponse()
            status = r.status
            with self.lock:
                self.answered += 1
                self.statuses[status] = self.statuses.get(status, 0) + 1
            try:
                data = json.loads(r.read())
            except (ValueError, OSError, http.client.HTTPException):
                data = None
                conn.close()
            return data
        except (OSError, http.client.HTTPException):
            with self.lock:
                self.unanswered += 1
            conn.close()
            return None

    def client(self, i):
        rng = random.Random(i)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        pending = []  # (due time, job id)
        while self.running:
            now = time.monotonic()
            if pending and pending[0][0] <= now:
                _, job = pending.pop(0)
                v = self.send(conn, f"/api/v6/images/fetch/{job}", {"key": f"soak-{i}"})
                if isinstance(v, dict) and v.get("status") == "processing" and len(pending) < 200:
                    pending.append((now + 1.0, job))
            else:
                body = {"key": f"soak-{i}", "model_id": rng.choice(["flux", "sdxl"]), "prompt": "soak",
                        "width": 256, "height": 256}
                v = self.send(conn, "/api/v6/images/text2img", body)
                if isinstance(v, dict) and v.get("status") == "processing" and v.get("id") is not None:
                    pending.append((now + min(float(v.get("eta") or 1), 5.0), v["id"]))
                    pending.sort()
            time.sleep(0.02)


def scrape(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name_labels, value = line.rsplit(" ", 1)
        name = name_labels.split("{", 1)[0]
        out.setdefault(name, []).append((name_labels, float(value)))
    return out


def total(metrics, name, must=()):
    return sum(v for labels, v in metrics.get(name, []) if all(m in labels for m in must))


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--bin", default=BIN, help="the agent's binary (default %(default)s)")
    a = ap.parse_args()
    if not os.path.exists(a.bin):
        sys.exit(f"{a.bin} missing: cargo build --release")
    d = tempfile.mkdtemp()
    procs = []
    try:
        sim, admin, proxy = free_port(), free_port(), free_port()
        open(f"{d}/scenario.yaml", "w").write(SCENARIO)
        procs.append(subprocess.Popen([a.bin, "sim", "--listen", f"127.0.0.1:{sim}", "--scenario", f"{d}/scenario.yaml"],
                                      stderr=subprocess.DEVNULL))
        wait_http(f"http://127.0.0.1:{sim}/_sim/stats")
        open(f"{d}/agent.yaml", "w").write(config(sim, admin, proxy))
        agent = subprocess.Popen([a.bin, "run", "--config", f"{d}/agent.yaml"], stderr=open(f"{d}/agent.log", "w"))
        procs.append(agent)
        wait_http(f"http://127.0.0.1:{admin}/readyz")

        load = Load(proxy, a.clients)
        load.start()
        end = time.monotonic() + a.minutes * 60
        samples = []  # (seconds, rss MiB, fds, jobs in flight, proxy requests)
        t0 = time.monotonic()
        print(f"soak: {a.bin}, {a.minutes:g} min, {a.clients} clients; sample every {SAMPLE} s", flush=True)
        print(f"{'t s':>6} {'RSS MiB':>8} {'fds':>5} {'jobs':>6} {'requests':>9}", flush=True)
        while time.monotonic() < end:
            time.sleep(max(0.0, min(SAMPLE, end - time.monotonic())))
            m = scrape(admin)
            s = (time.monotonic() - t0, rss_mib(agent.pid), fds(agent.pid),
                 total(m, "modelslab_jobs_in_flight", ['source="proxy"']),
                 total(m, "modelslab_requests_total", ['source="proxy"']))
            samples.append(s)
            print(f"{s[0]:>6.0f} {s[1]:>8.1f} {s[2]:>5} {s[3]:>6.0f} {s[4]:>9.0f}", flush=True)
        load.stop()
        time.sleep(1)
        m = scrape(admin)
        counted = total(m, "modelslab_requests_total", ['source="proxy"'])
        probe_runs = total(m, "modelslab_probe_runs_total")
        page_up = total(m, "modelslab_status_page_up")
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/healthz", timeout=5) as r:
            healthy = r.status == 200

        n = len(samples)
        mid, last = samples[n // 3: 2 * n // 3], samples[2 * n // 3:]
        peak = lambda rows, i: max(r[i] for r in rows)  # noqa: E731
        checks = [
            ("RSS levels off", peak(last, 1) <= peak(mid, 1) * 1.10 + 2,
             f"peak {peak(mid, 1):.1f} MiB in the middle third, {peak(last, 1):.1f} MiB in the last"),
            ("open fds bounded", peak(last, 2) <= peak(mid, 2) + 16,
             f"peak {peak(mid, 2)} in the middle third, {peak(last, 2)} in the last"),
            ("tracked jobs bounded", peak(samples, 3) <= MAX_TRACKED and peak(last, 3) <= peak(mid, 3) * 1.5 + 10,
             f"peak {peak(mid, 3):.0f} in the middle third, {peak(last, 3):.0f} in the last, limit {MAX_TRACKED}"),
            ("request counters exact", counted == load.answered and load.unanswered == 0,
             f"client: {load.answered} answered ({load.unanswered} without an answer); agent counted {counted:.0f}"),
            ("agent healthy, probes and status page ran", healthy and probe_runs > 0 and page_up == 1,
             f"/healthz {'200' if healthy else 'failed'}, {probe_runs:.0f} probe runs, status page up {page_up:.0f}"),
        ]
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(load.statuses.items()))
        print(f"answers by status: {codes}")
        ok = True
        for name, passed, detail in checks:
            print(f"{'ok  ' if passed else 'FAIL'} {name}: {detail}")
            ok &= passed
        if not ok:
            print(open(f"{d}/agent.log").read()[-4000:], file=sys.stderr)
        sys.exit(0 if ok else 1)
    finally:
        stop(procs)


if __name__ == "__main__":
    main()
