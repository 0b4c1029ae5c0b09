#!/usr/bin/env python3
"""The proxy's added latency with Redis on the path, side by side with the in-memory mode.

One emulator (`modelslab-sentinel sim`), one redis-server, and three agents with their proxy:
  memory : one agent, no cluster (state in memory)
  redis A: an agent with cluster.redis_url, where submissions go
  redis B: a second one, where the same jobs are polled (the cross-replica path)
The same client (one keep-alive connection, sequential) sends, per round, a generation (answered
`processing`: the job is tracked) and a fetch of an earlier job that has finished (answered
`success`: the job is ended), directly to the emulator and through each proxy. The client's
latency per request type is reported: p50 and p99, and the added p50 over direct.

Usage: bench/cluster.py [--rounds 1000]
Needs: target/release/modelslab-sentinel, redis-server (Debian package).
"""
import argparse, http.client, json, os, statistics, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import free_port, stop, wait_http  # noqa: E402

BIN = "target/release/modelslab-sentinel"


def agent(d, name, sim, extra):
    admin, proxy = free_port(), free_port()
    cfg = f"{d}/{name}.yaml"
    open(cfg, "w").write(
        f"upstream:\n  base_url: http://127.0.0.1:{sim}\n  api_key: bench\nadmin:\n  listen: 127.0.0.1:{admin}\n"
        f"proxy:\n  enabled: true\n  listen: 127.0.0.1:{proxy}\nlabels:\n  models: [flux]\n"
        f"telemetry:\n  log_level: warn\n{extra}")
    p = subprocess.Popen([BIN, "run", "--config", cfg], stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{admin}/readyz")
    return p, proxy, admin


class Client:
    def __init__(self, port):
        self.c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def post(self, path, body):
        data = json.dumps(body)
        t = time.perf_counter()
        self.c.request("POST", path, data, {"content-type": "application/json"})
        r = self.c.getresponse()
        out = r.read()
        return (time.perf_counter() - t) * 1000, json.loads(out)


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p / 100))]


def run(paths, rounds):
    """Per round and per path (interleaved, so that noise falls on every path alike): a submission
    through the path's first port, and a poll of a finished job through its second. Latencies
    in ms, by path: (submits, fetches)."""
    clients = {name: (Client(a), Client(b), []) for name, (a, b) in paths.items()}
    out = {name: ([], []) for name in paths}
    for n in range(rounds):
        for name, (s, f, pending) in clients.items():
            key = f"{name}-{n // 10}"
            ms, v = s.post("/api/v6/images/text2img", {"key": key, "model_id": "flux", "prompt": "p"})
            out[name][0].append(ms)
            pending.append((v["id"], key))
            if len(pending) > 20:  # polled 20 rounds later: the emulator finished it at once
                job, k = pending.pop(0)
                ms, v = f.post(f"/api/v6/images/fetch/{job}", {"key": k})
                assert v["status"] == "success", v
                out[name][1].append(ms)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=1000)
    a = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} missing: cargo build --release")
    d = tempfile.mkdtemp()
    procs = []
    try:
        sim, redis = free_port(), free_port()
        open(f"{d}/scenario.yaml", "w").write("job_duration: 0s\naccount: premium\n")
        procs.append(subprocess.Popen([BIN, "sim", "--listen", f"127.0.0.1:{sim}", "--scenario", f"{d}/scenario.yaml"],
                                      stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(["redis-server", "--port", str(redis), "--bind", "127.0.0.1", "--save", "",
                                       "--appendonly", "no", "--dir", d], stdout=subprocess.DEVNULL))
        wait_http(f"http://127.0.0.1:{sim}/_sim/stats")
        cluster = f"cluster:\n  redis_url: redis://127.0.0.1:{redis}/0\n"
        m, m_proxy, _ = agent(d, "memory", sim, "")
        ra, ra_proxy, ra_admin = agent(d, "redis-a", sim, cluster)
        rb, rb_proxy, _ = agent(d, "redis-b", sim, cluster)
        procs += [m, ra, rb]
        time.sleep(1)
        paths = {
            "direct": (sim, sim),
            "memory": (m_proxy, m_proxy),
            "redis, same replica": (ra_proxy, ra_proxy),
            "redis, across replicas": (ra_proxy, rb_proxy),
        }
        run({f"warm {k}": v for k, v in paths.items()}, 100)
        results = run(paths, a.rounds)
        base = {k: statistics.median(v) for k, v in zip(("submit", "fetch"), results["direct"])}
        print(f"{a.rounds} rounds, one keep-alive connection per path, interleaved; latency in ms")
        print(f"{'path':<24} {'submit p50':>10} {'p99':>7} {'+p50':>6}   {'fetch p50':>9} {'p99':>7} {'+p50':>6}")
        for name, (subs, fets) in results.items():
            sp, fp = statistics.median(subs), statistics.median(fets)
            print(f"{name:<24} {sp:>10.3f} {pct(subs, 99):>7.3f} {sp - base['submit']:>6.3f}   "
                  f"{fp:>9.3f} {pct(fets, 99):>7.3f} {fp - base['fetch']:>6.3f}")
        with urllib.request.urlopen(f"http://127.0.0.1:{ra_admin}/metrics") as r:
            text = r.read().decode()
        errors = sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
                     if l.startswith("modelslab_sentinel_cluster_errors_total{"))
        print(f"redis errors on replica A: {errors:.0f}")
    finally:
        stop(procs)


if __name__ == "__main__":
    main()
