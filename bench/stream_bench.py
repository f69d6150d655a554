#!/usr/bin/env python3
"""QA.STREAM benchmark: time to the first piece, XADDs per answer, PING while streams run.

    cargo build --release --lib && python3 bench/stream_bench.py [--reps 40]

Starts (on free 127.0.0.1 ports, stopped on exit, by pid) a redis-server with the module
pinned to SERVER_CPU (default 0) and a streaming OpenAI-compatible demo backend in this
process that emits one token every PACE_MS; the client side runs pinned to CLIENT_CPU
(default 1). Prints a Markdown report (docs/streaming.md#figures holds the last one).

1. Time to the first piece of a new question, A/B alternated: the same Python client
   streaming straight from the backend (http.client, SSE) vs `QA.STREAM` + `XREAD BLOCK`.
   The backend waits FIRST_MS before its first token in both cases.
2. XADDs per 1,000-token answer (INFO commandstats) at several token paces.
3. PING p99 while 200 streamed misses are written and read, vs idle (the PING client of
   bench/bench.py, its own process, real-time when allowed; median of 3 windows each).
"""

import argparse
import asyncio
import http.client
import http.server
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import redis
import redis.asyncio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = os.environ.get("QA_MODULE") or os.path.join(
    os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "libredis_qa.so")
SERVER_CPU = os.environ.get("SERVER_CPU", "0")
CLIENT_CPU = os.environ.get("CLIENT_CPU", "1")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Backend(http.server.BaseHTTPRequestHandler):
    """OpenAI-compatible chat completions that stream `tokens` tokens, `pace` s apart, after
    `first` s. The question may say `tokens=N` to ask for N tokens."""

    protocol_version = "HTTP/1.0"  # the body ends when the connection closes
    first = 0.02
    pace = 0.02
    tokens = 20

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        question = body.get("messages", [{}])[-1].get("content", "")
        n = self.tokens
        for word in question.split():
            if word.startswith("tokens="):
                n = int(word[7:])
        pace = self.pace
        for word in question.split():
            if word.startswith("pace_ms="):
                pace = float(word[8:]) / 1000
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        time.sleep(self.first)

        def chunk(delta, finish=None, usage=None):
            c = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if usage is not None:
                c = {"choices": [], "usage": usage}
            self.wfile.write(b"data: " + json.dumps(c).encode() + b"\n\n")
            self.wfile.flush()

        try:
            for i in range(n):
                if i:
                    time.sleep(pace)
                chunk({"content": f"tok{i} "})
            chunk({}, "stop")
            chunk(None, usage={"prompt_tokens": 10, "completion_tokens": n, "total_tokens": n + 10})
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass


def start_backend():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def start_redis(backend_port):
    port = free_port()
    d = tempfile.mkdtemp(prefix="qa-stream-bench-")
    cmd = ["taskset", "-c", SERVER_CPU, "redis-server", "--port", str(port), "--bind", "127.0.0.1",
           "--dir", d, "--save", "", "--appendonly", "no", "--loadmodule", MODULE,
           "--qa.backend-url", f"http://127.0.0.1:{backend_port}/v1",
           "--qa.max-inflight", "256", "--qa.timeout-ms", "120000", "--maxclients", "2000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = redis.Redis(port=port, decode_responses=True)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            r.ping()
            return proc, port
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("redis-server did not start")


def direct_first_piece(port, question):
    """ms to the first content piece, streaming straight from the backend."""
    t0 = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port)
    body = json.dumps({"model": "m", "stream": True,
                       "messages": [{"role": "user", "content": question}]})
    c.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    resp = c.getresponse()
    first = None
    for line in resp:
        if line.startswith(b"data: {") and b'"content"' in line:
            first = (time.perf_counter() - t0) * 1000
            break
    c.close()
    return first


def stream_first_piece(r, question):
    """ms to the first `text` entry read with XREAD BLOCK after QA.STREAM (a miss); then
    reads to the end so the flight is finished before the next sample."""
    t0 = time.perf_counter()
    reply = r.execute_command("QA.STREAM", "bench", question)
    reply = reply if isinstance(reply, dict) else dict(zip(reply[0::2], reply[1::2]))
    assert reply["served"] == "miss", reply
    key, last, first = reply["stream"], "0", None
    while True:
        for _, entries in r.xread({key: last}, block=10000) or []:
            for last, fields in entries:
                if "text" in fields and first is None:
                    first = (time.perf_counter() - t0) * 1000
                if "end" in fields or "error" in fields:
                    assert "end" in fields, fields
                    return first


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def xadds(r):
    return int(r.info("commandstats").get("cmdstat_xadd", {}).get("calls", 0))


async def stream_load(port, n, tokens, pace_ms):
    """n streamed misses at once, each read to its end by its own connection."""
    clients = [redis.asyncio.Redis(port=port, decode_responses=True) for _ in range(n)]
    for c in clients:
        await c.ping()

    async def reader(c, i):
        reply = await c.execute_command(
            "QA.STREAM", "bench", f"load {i} {time.time()} tokens={tokens} pace_ms={pace_ms}")
        reply = reply if isinstance(reply, dict) else dict(zip(reply[0::2], reply[1::2]))
        key, last = reply["stream"], "0"
        while True:
            for _, entries in await c.xread({key: last}, block=10000) or []:
                for last, fields in entries:
                    if "end" in fields or "error" in fields:
                        return

    await asyncio.gather(*(reader(c, i) for i, c in enumerate(clients)))
    for c in clients:
        await c.aclose()


def ping_window(port, duration, load=None):
    """PING latencies (µs) from bench.py's PING client (its own process, real-time when
    allowed) over `duration` s, while `load()` runs if given."""
    argv = [sys.executable, os.path.join(ROOT, "bench", "bench.py"), "--pinger", str(port),
            str(duration)]
    if subprocess.run(["chrt", "-f", "10", "true"], capture_output=True).returncode == 0:
        argv = ["chrt", "-f", "10"] + argv
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    p.stdin.write("go\n")
    p.stdin.flush()
    if load is not None:
        time.sleep(0.2)
        load()
    out, _ = p.communicate(timeout=duration + 60)
    return [us for _, us in json.loads(out.strip().splitlines()[-1])]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=40)
    a = ap.parse_args()
    os.sched_setaffinity(0, {int(CLIENT_CPU)})
    srv = start_backend()
    bport = srv.server_address[1]
    proc, port = start_redis(bport)
    try:
        r = redis.Redis(port=port, decode_responses=True)
        out = ["| | p50 | p90 | samples |", "|---|---|---|---|"]
        direct, via = [], []
        for i in range(a.reps):  # A B A B ...
            direct.append(direct_first_piece(bport, f"direct {i} {time.time()}"))
            via.append(stream_first_piece(r, f"via {i} {time.time()}"))
        out.append(f"| straight from the backend (SSE) | {pct(direct, 50):.2f} ms | "
                   f"{pct(direct, 90):.2f} ms | {len(direct)} |")
        out.append(f"| `QA.STREAM` + `XREAD BLOCK` | {pct(via, 50):.2f} ms | "
                   f"{pct(via, 90):.2f} ms | {len(via)} |")
        diffs = [v - d for v, d in zip(via, direct)]
        out.append(f"| difference (pairwise) | {statistics.median(diffs):+.2f} ms | "
                   f"{pct(diffs, 90):+.2f} ms | |")
        print(f"## 1. Time to the first piece (backend: first token after "
              f"{Backend.first * 1000:.0f} ms)\n")
        print("\n".join(out))

        print("\n## 2. XADDs per 1,000-token answer\n")
        print("| `qa.stream-batch-ms` | token pace | answer time | XADDs (text + end) | "
              "tokens per XADD |")
        print("|---|---|---|---|---|")
        for batch_ms, pace_ms in ((5, 0.2), (5, 1), (5, 2), (5, 5), (5, 10), (50, 5), (50, 10)):
            r.config_set("qa.stream-batch-ms", batch_ms)
            before = xadds(r)
            t0 = time.perf_counter()
            stream_first_piece(r, f"long {pace_ms} {time.time()} tokens=1000 pace_ms={pace_ms}")
            took = time.perf_counter() - t0
            n = xadds(r) - before
            print(f"| {batch_ms} | {pace_ms} ms | {took:.1f} s | {n} | "
                  f"{1000 / max(1, n - 1):.1f} |")
        r.config_set("qa.stream-batch-ms", 50)

        idle, busy = [], []
        load = lambda: asyncio.run(stream_load(port, 200, 100, 20))  # noqa: E731
        for _ in range(3):  # idle, loaded, idle, loaded ...
            idle.append(ping_window(port, 5))
            busy.append(ping_window(port, 5, load))
        print("\n## 3. PING while 200 streams are written and read (100 tokens each, 20 ms "
              "apart)\n")
        print("| | PING p50 | PING p99 | pings per window | windows |")
        print("|---|---|---|---|---|")
        for name, ws in (("idle", idle), ("200 streams", busy)):
            p50 = statistics.median(pct(w, 50) for w in ws)
            p99 = statistics.median(pct(w, 99) for w in ws)
            print(f"| {name} | {p50:.0f} µs | {p99:.0f} µs | "
                  f"{statistics.median(len(w) for w in ws):.0f} | {len(ws)} |")
        cs = r.info("commandstats").get("cmdstat_xadd", {})
        print(f"\nXADD server time: {cs.get('usec_per_call', '?')} µs per call "
              f"(INFO commandstats, whole run).")
    finally:
        proc.kill()
        proc.wait()
        srv.shutdown()


if __name__ == "__main__":
    main()
