#!/usr/bin/env python3
"""The proxy against nginx: the same wrk load, in one run, three ways.

  direct  : wrk -> upstream (nginx answering a small JSON body)
  nginx   : wrk -> nginx reverse proxy (keep-alive upstream pool) -> upstream
  sentinel: wrk -> modelslab-sentinel proxy -> upstream

Then RSS of the agent while 1,000 keep-alive connections are open through it.
Usage: bench/proxy.py [--seconds 10] [--connections 64]
Needs: target/release/modelslab-sentinel, nginx, wrk (Debian packages nginx-light, wrk).
"""
import argparse, os, re, socket, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import cpu_seconds, free_port, rss_mib, stop, wait_http  # noqa: E402

BIN = "target/release/modelslab-sentinel"
BODY = '{"status":"success","id":91753437,"generationTime":1.06,"output":["https://pub-3626123a908346a7a8be8d9295f44e26.r2.dev/generations/0-1.png"]}'





def to_ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url, seconds, connections, threads=2):
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    lat = {p: to_ms(v, u) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "total": total, "p50": lat.get("50"), "p99": lat.get("99"), "non2xx": int(errors.group(1)) if errors else 0}


def nginx(prefix, name, body):
    os.makedirs(f"{prefix}/{name}/logs", exist_ok=True)
    conf = f"{prefix}/{name}/nginx.conf"
    open(conf, "w").write(
        "daemon off; worker_processes 1; error_log stderr error; pid nginx.pid;\n"
        "events { worker_connections 4096; }\n"
        f"http {{ access_log off; {body} }}\n")
    return subprocess.Popen(["nginx", "-p", f"{prefix}/{name}", "-c", conf], stderr=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    a = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} missing: cargo build --release")
    d = tempfile.mkdtemp()
    procs = []
    try:
        up, via_nginx, via_us, admin = free_port(), free_port(), free_port(), free_port()
        procs.append(nginx(d, "upstream", f"server {{ listen 127.0.0.1:{up}; keepalive_requests 1000000; "
                                          f"location / {{ default_type application/json; return 200 '{BODY}'; }} }}"))
        procs.append(nginx(d, "proxy", f"upstream api {{ server 127.0.0.1:{up}; keepalive 256; }} "
                                       f"server {{ listen 127.0.0.1:{via_nginx}; keepalive_requests 1000000; location / {{ "
                                       "proxy_pass http://api; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"))
        cfg = os.path.join(d, "agent.yaml")
        open(cfg, "w").write(f"upstream:\n  base_url: http://127.0.0.1:{up}\nadmin:\n  listen: 127.0.0.1:{admin}\n"
                             f"proxy:\n  enabled: true\n  listen: 127.0.0.1:{via_us}\ntelemetry:\n  log_level: warn\n")
        agent = subprocess.Popen([BIN, "run", "--config", cfg], stderr=subprocess.DEVNULL)
        procs.append(agent)
        path = "/api/v6/images/fetch/91753437"
        for port in (up, via_nginx, via_us):
            wait_http(f"http://127.0.0.1:{port}{path}")
        results = {}
        sent_through_us = 0
        for name, port in (("direct", up), ("nginx", via_nginx), ("sentinel", via_us)):
            warm = wrk(f"http://127.0.0.1:{port}{path}", 2, a.connections)
            results[name] = wrk(f"http://127.0.0.1:{port}{path}", a.seconds, a.connections)
            if name == "sentinel":
                sent_through_us += warm["total"] + results[name]["total"]
        idle_rss = rss_mib(agent.pid)
        # RSS with 1,000 connections open (and busy) through the proxy.
        load = subprocess.Popen(["wrk", "-t2", "-c1000", "-d8s", f"http://127.0.0.1:{via_us}{path}"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        peak = 0.0
        for _ in range(14):
            time.sleep(0.5)
            peak = max(peak, rss_mib(agent.pid))
        out, _ = load.communicate()
        sent_through_us += int(re.search(r"(\d+) requests in", out).group(1))
        time.sleep(1)
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics") as r:
            metrics = r.read().decode()
        counted = sum(float(l.rsplit(" ", 1)[1]) for l in metrics.splitlines()
                      if l.startswith("modelslab_requests_total{") and 'source="proxy"' in l)
    finally:
        stop(procs)

    print(f"wrk -t2 -c{a.connections} -d{a.seconds}s, keep-alive, {len(BODY)}-byte JSON answers:")
    print(f"{'':10} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for name, r in results.items():
        print(f"{name:10} {r['rps']:10.0f} {r['p50']:8.2f} {r['p99']:8.2f} {r['non2xx']:8}")
    s, n, dct = results["sentinel"], results["nginx"], results["direct"]
    print(f"throughput sentinel / nginx: {s['rps'] / n['rps']:.2f}")
    print(f"added p99 over direct: sentinel {s['p99'] - dct['p99']:+.2f} ms, nginx {n['p99'] - dct['p99']:+.2f} ms")
    print(f"agent RSS: {idle_rss:.1f} MiB after the runs, peak {peak:.1f} MiB with 1,000 connections")
    # wrk counts completed requests; ones cut off when a run ends may still be counted by the agent.
    print(f"requests completed by wrk through the proxy: {sent_through_us}, counted by the agent: {counted:.0f}")


if __name__ == "__main__":
    main()
