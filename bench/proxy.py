#!/usr/bin/env python3
"""The proxy against nginx: the same wrk load, in one run, three ways, at 1, 64 and 1,000
connections; then the proxy's heap allocations per request, and LLM streams through it.

  direct  : wrk -> upstream (nginx answering a 141-byte JSON)
  nginx   : wrk -> nginx reverse proxy (one worker per core, keep-alive upstream pool) -> upstream
  sentinel: wrk -> modelslab-sentinel proxy -> upstream

Each request is a POST of a small JSON body (a text2img submission with a key) over keep-alive
connections. For each concurrency the three targets run one after the other (a short warm-up,
then --seconds of load); the proxy's RSS is sampled during its runs (peak) and its CPU time is
divided by the requests it served; its open upstream connections are read from its metrics.
wrk, nginx and the agent share this machine's cores: compare the figures of one run with each
other (ratios), not across runs.

Allocations: a second agent, with bench/malloc_count.c preloaded (it counts malloc, calloc,
realloc and the aligned allocators), serves wrk at 64 connections; its allocations over the run
divided by the requests it counted.

Streams: 64 concurrent LLM chat streams (OpenAI dialect) from the emulator (`sim`: first token
after 50 ms, then 50 tokens 20 ms apart), read by raw asyncio clients, directly and through the
proxy in turns of 5 s until each had --stream-seconds; time to first token and the gaps between
events, p50 and p99, and the proxy's RSS over its turns. --soak-seconds N then streams through
the proxy alone for N seconds (600: the memory soak), its RSS sampled every 30 s.

Usage: bench/proxy.py [--seconds 10] [--connections 1,64,1000] [--repeat 1] [--stream-seconds 15]
                      [--soak-seconds 0] [--only wrk,alloc,streams]
Needs: target/release/modelslab-sentinel, nginx, wrk (Debian packages nginx-light, wrk), cc.
"""
import argparse, asyncio, json, os, re, subprocess, sys, tempfile, threading, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import cpu_seconds, free_port, rss_mib, stop, wait_http  # noqa: E402

BIN = "target/release/modelslab-sentinel"
BODY = '{"status":"success","id":91753437,"generationTime":1.06,"output":["https://pub-3626123a908346a7a8be8d9295f44e26.r2.dev/generations/0-1.png"]}'
PATH = "/api/v6/images/text2img"
LLM_PATH = "/api/v7/llm/v1/chat/completions"
STREAM_SCENARIO = "llm: {first_token: 50ms, token_interval: 20ms, answer_tokens: 50}\n"
STREAMS = 64
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


def upstream(d):
    """The nginx upstream answering BODY; returns (process, port)."""
    port = free_port()
    p = nginx(d, "upstream", os.cpu_count() or 2,
              f"server {{ listen 127.0.0.1:{port}; keepalive_requests 1000000; "
              f"location / {{ default_type application/json; return 200 '{BODY}'; }} }}")
    wait_http(f"http://127.0.0.1:{port}{PATH}")
    return p, port


def children_cpu(pid):
    """CPU seconds of a process and its children (nginx's workers)."""
    total = cpu_seconds(pid)
    try:
        kids = open(f"/proc/{pid}/task/{pid}/children").read().split()
    except OSError:
        kids = []
    return total + sum(cpu_seconds(int(k)) for k in kids)


def metric(admin, name):
    """The sum of a family's samples on the agent's /metrics (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics") as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


class Peak(threading.Thread):
    """Samples a process's RSS every 100 ms, and (with `admin`) its open upstream connections
    every 500 ms, until stopped."""

    def __init__(self, pid, admin=None):
        super().__init__(daemon=True)
        self.pid, self.admin, self.peak, self.conns, self.done = pid, admin, 0.0, 0.0, threading.Event()

    def run(self):
        n = 0
        while not self.done.is_set():
            self.peak = max(self.peak, rss_mib(self.pid))
            if self.admin and n % 5 == 0:
                self.conns = max(self.conns, metric(self.admin, "modelslab_proxy_upstream_connections"))
            n += 1
            time.sleep(0.1)

    def stop(self):
        self.done.set()
        self.join()
        return self.peak


def start_agent(d, name, upstream_port, env=None):
    """An agent proxying to 127.0.0.1:`upstream_port`; returns (process, admin port, proxy port)."""
    admin, proxy = free_port(), free_port()
    cfg = os.path.join(d, f"{name}.yaml")
    open(cfg, "w").write(f"upstream:\n  base_url: http://127.0.0.1:{upstream_port}\n"
                         f"admin:\n  listen: 127.0.0.1:{admin}\n"
                         f"proxy:\n  enabled: true\n  listen: 127.0.0.1:{proxy}\ntelemetry:\n  log_level: warn\n")
    p = subprocess.Popen([BIN, "run", "--config", cfg], stderr=subprocess.DEVNULL, env=env)
    wait_http(f"http://127.0.0.1:{admin}/readyz")
    return p, admin, proxy


def throughput(d, a, levels, script):
    """The wrk rows: direct, nginx and this proxy at each concurrency."""
    procs, rows = [], []
    try:
        up_proc, up = upstream(d)
        procs.append(up_proc)
        via_nginx = free_port()
        ngx = nginx(d, "proxy", os.cpu_count() or 2,
                    f"upstream api {{ server 127.0.0.1:{up}; keepalive 1024; }} "
                    f"server {{ listen 127.0.0.1:{via_nginx}; keepalive_requests 1000000; location / {{ "
                    "proxy_pass http://api; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }")
        procs.append(ngx)
        wait_http(f"http://127.0.0.1:{via_nginx}{PATH}")
        agent, admin, via_us = start_agent(d, "agent", up)
        procs.append(agent)
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
                    peak = Peak(agent.pid, admin)
                    if name == "sentinel":
                        peak.start()
                    r[name] = wrk(url, a.seconds, c, script)
                    cpu1 = cpu_seconds(pid) if name == "sentinel" else children_cpu(pid)
                    r[name]["cpu_us"] = (cpu1 - cpu0) * 1e6 / max(r[name]["total"], 1)
                    if name == "sentinel":
                        r[name]["rss"] = peak.stop()
                        r[name]["conns"] = peak.conns
                        served += warm["total"] + r[name]["total"]
                rows.append((c, r))
        time.sleep(1)
        counted = metric(admin, "modelslab_requests_total")
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
    print("| connections | this proxy / nginx throughput | p99: direct / nginx / this proxy "
          "| RSS of this proxy | its upstream connections |")
    print("|---|---|---|---|---|")
    for c, r in rows:
        s, n, dct = r["sentinel"], r["nginx"], r["direct"]
        print(f"| {c:,} | {s['rps'] / n['rps']:.2f}× | {dct['p99']:.2f} / {n['p99']:.2f} / {s['p99']:.2f} ms "
              f"| {s['rss']:.0f} MiB | {s['conns']:.0f} |")
    print(f"\nagent RSS idle {idle:.1f} MiB; requests completed by wrk through the proxy: {served}, "
          f"counted by the agent: {counted:.0f}")
    for c, r in rows:
        s, n, dct = r["sentinel"], r["nginx"], r["direct"]
        print(f"added over direct at {c:,}: p50 nginx {n['p50'] - dct['p50']:+.2f} ms, this proxy "
              f"{s['p50'] - dct['p50']:+.2f} ms; p99 nginx {n['p99'] - dct['p99']:+.2f} ms, this proxy "
              f"{s['p99'] - dct['p99']:+.2f} ms")


def allocations(d, seconds, script):
    """Heap allocations per proxied request, counted by bench/malloc_count.c preloaded."""
    so = os.path.join(d, "malloc_count.so")
    here = os.path.dirname(os.path.abspath(__file__))
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", so, os.path.join(here, "malloc_count.c"), "-lpthread"],
                   check=True)
    counts = os.path.join(d, "allocations")
    env = dict(os.environ, LD_PRELOAD=so, MALLOC_COUNT_FILE=counts)
    up_proc, up = upstream(d)
    procs = [up_proc]
    try:
        agent, admin, proxy = start_agent(d, "counted", up, env)
        procs.append(agent)
        url = f"http://127.0.0.1:{proxy}{PATH}"
        wrk(url, 2, 64, script)
        time.sleep(0.3)
        a0, n0 = int(open(counts).read()), metric(admin, "modelslab_requests_total")
        wrk(url, seconds, 64, script)
        time.sleep(0.3)
        a1, n1 = int(open(counts).read()), metric(admin, "modelslab_requests_total")
    finally:
        stop(procs)
    per_request = (a1 - a0) / max(n1 - n0, 1)
    print(f"heap allocations per proxied request: {per_request:.1f} (over {n1 - n0:.0f} requests at 64 connections)")


async def one_stream(port, n):
    """One streamed chat answer: when it was asked, and when each event arrived."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps({"model": "claude-sonnet", "stream": True,
                       "messages": [{"role": "user", "content": f"count to fifty, stream {n}"}]})
    head = (f"POST {LLM_PATH} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer bench-secret-key\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    asked = time.perf_counter()
    writer.write((head + body).encode())
    await writer.drain()
    times = []
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            break
        times += [time.perf_counter()] * chunk.count(b"data: ")
    writer.close()
    return asked, times


async def streams_for(port, seconds, first):
    """STREAMS workers, each streaming one answer after another for `seconds`, their starts
    spread over the first second (a steady 64 at once, not a herd); every stream's timings."""
    async def worker(i):
        await asyncio.sleep(i / STREAMS)
        out, end = [], time.perf_counter() + seconds
        while time.perf_counter() < end:
            out.append(await asyncio.wait_for(one_stream(port, first + i * 100000 + len(out)), 60))
        return out
    return [s for w in await asyncio.gather(*(worker(i) for i in range(STREAMS))) for s in w]


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def streams(d, seconds, soak):
    """64 concurrent streams in turns, directly and through the proxy; their TTFT and gaps. Then
    `soak` seconds of streams through the proxy alone."""
    scenario = os.path.join(d, "streams.yaml")
    open(scenario, "w").write(STREAM_SCENARIO)
    sim_port = free_port()
    procs = [subprocess.Popen([BIN, "sim", "--listen", f"127.0.0.1:{sim_port}", "--scenario", scenario],
                              stderr=subprocess.DEVNULL)]
    seen = {name: {"ttft": [], "gaps": [], "events": 0, "streams": 0} for name in ("direct", "sentinel")}
    rss, soaked = [], []
    try:
        wait_http(f"http://127.0.0.1:{sim_port}/_sim/stats")
        agent, admin, proxy = start_agent(d, "agent-streams", sim_port)
        procs.append(agent)
        turn = min(5, seconds)
        for k in range(max(1, round(seconds / turn))):
            for name, port in (("direct", sim_port), ("sentinel", proxy)):
                for asked, times in asyncio.run(streams_for(port, turn, k * 10_000_000)):
                    s = seen[name]
                    s["streams"] += 1
                    s["events"] += len(times)
                    if len(times) > 1:
                        s["ttft"].append((times[1] - asked) * 1000)
                        s["gaps"] += [(b - a) * 1000 for a, b in zip(times[1:], times[2:])]
                if name == "sentinel":
                    rss.append(rss_mib(agent.pid))
        for k in range(soak // 30):
            done = asyncio.run(streams_for(proxy, 30, (k + 100) * 10_000_000))
            soaked.append(rss_mib(agent.pid))
            print(f"soak {(k + 1) * 30:4d} s: proxy RSS {soaked[-1]:.1f} MiB, {len(done)} streams "
                  f"({sum(len(t) for _, t in done)} events) in the last 30 s", flush=True)
    finally:
        stop(procs)

    print(f"\n{STREAMS} concurrent LLM streams ({STREAM_SCENARIO.strip()}), {seconds} s each way, in turns:")
    print(f"{'target':9} {'streams':>8} {'events':>8} {'TTFT p50':>9} {'p99':>7} {'gap p50':>8} {'p99':>7}  (ms)")
    for name in ("direct", "sentinel"):
        x = seen[name]
        print(f"{name:9} {x['streams']:8} {x['events']:8} {percentile(x['ttft'], .5):9.2f} "
              f"{percentile(x['ttft'], .99):7.2f} {percentile(x['gaps'], .5):8.2f} {percentile(x['gaps'], .99):7.2f}")
    dx, sx = seen["direct"], seen["sentinel"]
    added = [percentile(sx[k], q) - percentile(dx[k], q) for k in ("ttft", "gaps") for q in (.5, .99)]
    print("added by the proxy: TTFT p50 {:+.2f} ms, p99 {:+.2f} ms; gaps p50 {:+.2f} ms, p99 {:+.2f} ms".format(*added))
    print("proxy RSS after each of its turns: " + ", ".join(f"{r:.1f}" for r in rss) + " MiB")
    if soaked:
        third = max(1, len(soaked) // 3)
        print(f"soak of {len(soaked) * 30} s: RSS max {max(soaked[:third]):.1f} MiB in the first third, "
              f"{max(soaked[-third:]):.1f} MiB in the last third")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", default="1,64,1000")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--stream-seconds", type=int, default=15)
    ap.add_argument("--soak-seconds", type=int, default=0)
    ap.add_argument("--only", default="wrk,alloc,streams")
    a = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} missing: cargo build --release")
    parts = set(a.only.split(","))
    d = tempfile.mkdtemp()
    script = os.path.join(d, "post.lua")
    open(script, "w").write(POST)
    if "wrk" in parts:
        throughput(d, a, [int(c) for c in a.connections.split(",")], script)
    if "alloc" in parts:
        allocations(d, a.seconds, script)
    if "streams" in parts:
        streams(d, a.stream_seconds, a.soak_seconds)


if __name__ == "__main__":
    main()
