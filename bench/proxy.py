#!/usr/bin/env python3
"""The proxy against nginx: the same wrk load, in one run, three ways, at 1, 64 and 1,000
connections.

  direct  : wrk -> upstream (nginx answering a 141-byte JSON)
  nginx   : wrk -> nginx reverse proxy (one worker per core, keep-alive upstream pool) -> upstream
  sentinel: wrk -> modelslab-sentinel proxy -> upstream

Each request is a POST of a small JSON body (a text2img submission with a key) over keep-alive
connections. For each concurrency the three targets run one after the other (a short warm-up,
then --seconds of load); the proxy's RSS is sampled during its runs (peak) and its CPU time is
divided by the requests it served. wrk, nginx and the agent share this machine's cores: compare
the figures of one run with each other (ratios), not across runs.

Usage: bench/proxy.py [--seconds 10] [--connections 1,64,1000] [--repeat 1]
Needs: target/release/modelslab-sentinel, nginx, wrk (Debian packages nginx-light, wrk).
"""
import argparse, os, re, subprocess, sys, tempfile, threading, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import cpu_seconds, free_port, rss_mib, stop, wait_http  # noqa: E402

BIN = "target/release/modelslab-sentinel"
BODY = '{"status":"success","id":91753437,"generationTime":1.06,"output":["https://pub-3626123a908346a7a8be8d9295f44e26.r2.dev/generations/0-1.png"]}'
PATH = "/api/v6/images/text2img"
POST = """wrk.method = "POST"
wrk.body = '{"key":"bench-secret-key","model_id":"flux","prompt":"a lighthouse at dawn","width":512,"height":512}'
wrk.headers["Content-Type"] = "application/json"
"""


def to_ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url, seconds, connections, script):
    threads = min(2, connections)
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script, url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    lat = {p: to_ms(v, u) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockerr = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "total": total, "p50": lat.get("50"), "p99": lat.get("99"),
            "non2xx": int(errors.group(1)) if errors else 0, "sockerr": sockerr.group(1) if sockerr else ""}


def nginx(prefix, name, workers, body):
    os.makedirs(f"{prefix}/{name}/logs", exist_ok=True)
    conf = f"{prefix}/{name}/nginx.conf"
    open(conf, "w").write(
        f"daemon off; worker_processes {workers}; error_log stderr error; pid nginx.pid;\n"
        "worker_rlimit_nofile 65536; events { worker_connections 8192; }\n"
        f"http {{ access_log off; {body} }}\n")
    return subprocess.Popen(["nginx", "-p", f"{prefix}/{name}", "-c", conf], stderr=subprocess.DEVNULL)


def children_cpu(pid):
    """CPU seconds of a process and its children (nginx's workers)."""
    total = cpu_seconds(pid)
    try:
        kids = open(f"/proc/{pid}/task/{pid}/children").read().split()
    except OSError:
        kids = []
    return total + sum(cpu_seconds(int(k)) for k in kids)


class Peak(threading.Thread):
    """Samples a process's RSS every 100 ms until stopped."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0.0, threading.Event()

    def run(self):
        while not self.done.is_set():
            self.peak = max(self.peak, rss_mib(self.pid))
            time.sleep(0.1)

    def stop(self):
        self.done.set()
        self.join()
        return self.peak


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", default="1,64,1000")
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} missing: cargo build --release")
    levels = [int(c) for c in a.connections.split(",")]
    d = tempfile.mkdtemp()
    script = os.path.join(d, "post.lua")
    open(script, "w").write(POST)
    procs = []
    rows = []
    try:
        up, via_nginx, via_us, admin = free_port(), free_port(), free_port(), free_port()
        workers = os.cpu_count() or 2
        procs.append(nginx(d, "upstream", workers, f"server {{ listen 127.0.0.1:{up}; keepalive_requests 1000000; "
                                                   f"location / {{ default_type application/json; return 200 '{BODY}'; }} }}"))
        ngx = nginx(d, "proxy", workers, f"upstream api {{ server 127.0.0.1:{up}; keepalive 1024; }} "
                                         f"server {{ listen 127.0.0.1:{via_nginx}; keepalive_requests 1000000; location / {{ "
                                         "proxy_pass http://api; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }")
        procs.append(ngx)
        cfg = os.path.join(d, "agent.yaml")
        open(cfg, "w").write(f"upstream:\n  base_url: http://127.0.0.1:{up}\nadmin:\n  listen: 127.0.0.1:{admin}\n"
                             f"proxy:\n  enabled: true\n  listen: 127.0.0.1:{via_us}\ntelemetry:\n  log_level: warn\n")
        agent = subprocess.Popen([BIN, "run", "--config", cfg], stderr=subprocess.DEVNULL)
        procs.append(agent)
        for port in (up, via_nginx, via_us):
            wait_http(f"http://127.0.0.1:{port}{PATH}")
        idle = rss_mib(agent.pid)
        served = 0
        for _ in range(a.repeat):
            for c in levels:
                r = {}
                for name, port in (("direct", up), ("nginx", via_nginx), ("sentinel", via_us)):
                    url = f"http://127.0.0.1:{port}{PATH}"
                    warm = wrk(url, 2, c, script)
                    pid = agent.pid if name == "sentinel" else ngx.pid
                    cpu0 = cpu_seconds(pid) if name == "sentinel" else children_cpu(pid)
                    peak = Peak(agent.pid)
                    if name == "sentinel":
                        peak.start()
                    r[name] = wrk(url, a.seconds, c, script)
                    cpu1 = cpu_seconds(pid) if name == "sentinel" else children_cpu(pid)
                    r[name]["cpu_us"] = (cpu1 - cpu0) * 1e6 / max(r[name]["total"], 1)
                    if name == "sentinel":
                        r[name]["rss"] = peak.stop()
                        served += warm["total"] + r[name]["total"]
                rows.append((c, r))
        time.sleep(1)
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics") as resp:
            metrics = resp.read().decode()
        counted = sum(float(l.rsplit(" ", 1)[1]) for l in metrics.splitlines()
                      if l.startswith("modelslab_requests_total{") and 'source="proxy"' in l)
    finally:
        stop(procs)

    print(f"wrk POST {PATH}, keep-alive, {len(BODY)}-byte JSON answers, {a.seconds} s per run, {os.cpu_count()} cores")
    print(f"{'conns':>6} {'target':9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/req':>10} {'non-2xx':>8}")
    for c, r in rows:
        for name in ("direct", "nginx", "sentinel"):
            x = r[name]
            cpu = f"{x['cpu_us']:10.1f}" if name != "direct" else f"{'':10}"
            print(f"{c:6} {name:9} {x['rps']:9.0f} {x['p50']:8.2f} {x['p99']:8.2f} {cpu} {x['non2xx']:8} {x['sockerr']}")
    print()
    print("| connections | this proxy / nginx throughput | p99: direct / nginx / this proxy | RSS of this proxy |")
    print("|---|---|---|---|")
    for c, r in rows:
        s, n, dct = r["sentinel"], r["nginx"], r["direct"]
        print(f"| {c:,} | {s['rps'] / n['rps']:.2f}× | {dct['p99']:.2f} / {n['p99']:.2f} / {s['p99']:.2f} ms "
              f"| {s['rss']:.0f} MiB |")
    print(f"\nagent RSS idle {idle:.1f} MiB; requests completed by wrk through the proxy: {served}, "
          f"counted by the agent: {counted:.0f}")


if __name__ == "__main__":
    main()
