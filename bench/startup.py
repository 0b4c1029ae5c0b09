#!/usr/bin/env python3
"""Time from exec to /readyz = 200, and idle RSS, of the release binary.

Usage: bench/startup.py [--runs N] [--idle SECONDS] [--bin PATH]
Builds nothing: run `cargo build --release` first (bench/run-all does).
Prints one line per figure; the README quotes them.
"""
import argparse, os, re, statistics, subprocess, sys, tempfile, time, urllib.request

CONFIG = """\
upstream:
  base_url: http://127.0.0.1:9
  api_key: bench-key
admin:
  listen: 127.0.0.1:0
"""

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

def ready_once(binary, config_path, deadline_s=10.0):
    start = time.perf_counter()
    proc = subprocess.Popen([binary, "run", "--config", config_path], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    addr = None
    end = time.monotonic() + deadline_s
    while addr is None and time.monotonic() < end:
        line = proc.stderr.readline()
        m = re.search(r"listening on http://(\S+)", line)
        if m:
            addr = m.group(1)
    if addr is None:
        proc.kill()
        sys.exit("agent did not report its admin address")
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"http://{addr}/readyz", timeout=1) as r:
                if r.status == 200:
                    return time.perf_counter() - start, proc
        except OSError:
            time.sleep(0.001)
    proc.kill()
    sys.exit("agent never became ready")

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--idle", type=float, default=5.0)
    ap.add_argument("--bin", default="target/release/modelslab-sentinel")
    a = ap.parse_args()
    if not os.path.exists(a.bin):
        sys.exit(f"{a.bin} not found: cargo build --release first")
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "sentinel.yaml")
        with open(cfg, "w") as f:
            f.write(CONFIG)
        times = []
        for i in range(a.runs):
            t, proc = ready_once(a.bin, cfg)
            times.append(t * 1000)
            if i < a.runs - 1:
                proc.terminate(); proc.wait(timeout=10)
        time.sleep(a.idle)
        idle = rss_kib(proc.pid)
        proc.terminate(); proc.wait(timeout=10)
    times.sort()
    print(f"startup to ready: median {statistics.median(times):.1f} ms, max {times[-1]:.1f} ms over {a.runs} runs")
    print(f"idle RSS after {a.idle:.0f} s: {idle / 1024:.1f} MiB")

if __name__ == "__main__":
    main()
