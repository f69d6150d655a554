#!/usr/bin/env python3
"""Semantic tier benchmark: index search time, index memory and rebuild time.

Starts its own redis-server (module loaded, semantic tier on) and a stand-in embeddings +
webhook server on free loopback ports, fills N entries whose `sem` field holds a random
unit vector of D dimensions (plain HSETs, pipelined, under a generation token set first
with QA.INVALIDATE ... TOKEN; DEBUG RELOAD then indexes them by the rebuild scan, as after a
restart: the index learns only of the module's own writes directly), then:
  * index memory: INFO qa_semantic_index_bytes vs the raw float32 vectors;
  * search time: Q semantic misses with unique questions (their random vectors match nothing,
    so every search scans the whole scope); INFO qa_semantic_search_p50_us / p99_us, which
    time the index search alone, on the worker thread;
  * rebuild: SAVE, kill -9, restart: time until the server answers (RDB load) and until the
    index holds the N entries again (rebuilt by a scan in steps on the main thread).
Prints a markdown table. Stops only the processes it started. Traffic: 127.0.0.1 only.

    python3 bench/semantic_bench.py [--entries 100000] [--dims 384] [--queries 500]
"""

import argparse
import hashlib
import http.server
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import redis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NORMALIZATION_VERSION = b"qa-norm-v2"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scope_digest(model, system, generation=b""):
    h = hashlib.sha256()
    for f in (NORMALIZATION_VERSION, model.encode(), system.encode(), generation):
        h.update(struct.pack(">Q", len(f)))
        h.update(f)
    return h.digest()[:16]


def sem_field(scope, vec_bytes, dims):
    return b"qav1" + scope + struct.pack("<H", dims) + vec_bytes


def random_vectors(n, dims, seed):
    """n unit vectors as float32 little-endian bytes each (numpy if present)."""
    try:
        import numpy as np

        rng = np.random.default_rng(seed)
        v = rng.standard_normal((n, dims)).astype("<f4")
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return [row.tobytes() for row in v]
    except ImportError:
        rng = random.Random(seed)
        out = []
        for _ in range(n):
            v = [rng.gauss(0, 1) for _ in range(dims)]
            norm = sum(x * x for x in v) ** 0.5
            out.append(struct.pack("<%df" % dims, *(x / norm for x in v)))
        return out


class StandIn(http.server.BaseHTTPRequestHandler):
    dims = 384

    def log_message(self, *a):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path.endswith("/embeddings"):
            seed = int.from_bytes(hashlib.sha256(body.get("input", "").encode()).digest()[:8], "big")
            rng = random.Random(seed)
            v = [rng.gauss(0, 1) for _ in range(self.dims)]
            out = {"data": [{"index": 0, "embedding": v}], "usage": {"prompt_tokens": 8}}
        else:
            out = {"answer": "stand-in answer", "cache": False}
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def info(r):
    return r.info("qa")


def wait(pred, limit, step=0.01):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            if pred():
                return True
        except (redis.ConnectionError, redis.BusyLoadingError):
            pass
        time.sleep(step)
    return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--dims", type=int, default=384)
    ap.add_argument("--queries", type=int, default=500)
    args = ap.parse_args()
    module = os.environ.get("QA_MODULE", os.path.join(ROOT, "target/release/libredis_qa.so"))
    server_bin = os.environ.get("QA_TEST_SERVER", "redis-server")
    StandIn.dims = args.dims
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    hp = httpd.server_address[1]
    work = tempfile.mkdtemp(prefix="qa-sem-bench.")
    port = free_port()
    cmd = [
        server_bin, "--port", str(port), "--bind", "127.0.0.1", "--dir", work,
        "--save", "", "--appendonly", "no", "--enable-debug-command", "yes",
        "--loadmodule", module,
        "--qa.backend-format", "webhook", "--qa.backend-url", f"http://127.0.0.1:{hp}/hook",
        "--qa.embed-url", f"http://127.0.0.1:{hp}/v1", "--qa.semantic", "yes",
        "--qa.max-inflight", "2",
    ]
    log = open(os.path.join(work, "redis.log"), "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    results = {}
    try:
        r = redis.Redis(port=port)
        assert wait(lambda: r.ping(), 10)
        token = b"0123456789abcdef0123456789abcdef"
        r.execute_command("QA.INVALIDATE", "bench", "TOKEN", token)
        scope = scope_digest("gpt-4o-mini", "", token)
        t0 = time.monotonic()
        vecs = random_vectors(args.entries, args.dims, 1)
        results["make vectors (s)"] = time.monotonic() - t0
        t0 = time.monotonic()
        pipe = r.pipeline(transaction=False)
        for i, v in enumerate(vecs):
            key = "qa:{bench}:%064x" % i
            pipe.hset(key, mapping={
                "answer": "answer %d" % i,
                "question": "stored question number %d" % i,
                "model": "gpt-4o-mini",
                "created": "0",
                "sem": sem_field(scope, v, args.dims),
            })
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()
        del vecs
        r.execute_command("DEBUG", "RELOAD")
        assert wait(lambda: info(r)["qa_semantic_index_entries"] == args.entries, 120)
        results["fill + index %d entries (s)" % args.entries] = time.monotonic() - t0
        i = info(r)
        results["index bytes"] = i["qa_semantic_index_bytes"]
        results["raw float32 bytes"] = i["qa_semantic_index_vector_bytes"]
        results["index / raw"] = i["qa_semantic_index_bytes"] / i["qa_semantic_index_vector_bytes"]
        lat = []
        for q in range(args.queries):
            t = time.monotonic()
            r.execute_command("QA.GET", "bench", "a question nobody stored %d" % q, "SEMANTIC")
            lat.append(time.monotonic() - t)
        i = info(r)
        lat.sort()
        results["search p50 (µs, INFO)"] = i["qa_semantic_search_p50_us"]
        results["search p99 (µs, INFO)"] = i["qa_semantic_search_p99_us"]
        results["semantic miss round trip p50 (ms)"] = 1000 * lat[len(lat) // 2]
        results["semantic miss round trip p99 (ms)"] = 1000 * lat[int(len(lat) * 0.99) - 1]
        results["searches without match"] = i["qa_semantic_no_match"]
        t0 = time.monotonic()
        r.save()
        results["SAVE (s)"] = time.monotonic() - t0
        rdb = os.path.getsize(os.path.join(work, "dump.rdb"))
        results["RDB bytes"] = rdb
        proc.kill()
        proc.wait()
        t0 = time.monotonic()
        again = cmd
        if os.environ.get("BENCH_PERF"):
            again = ["perf", "record", "-e", "cpu-clock", "-g", "-o", os.environ["BENCH_PERF"]] + cmd
        proc = subprocess.Popen(again, stdout=log, stderr=subprocess.STDOUT)
        r = redis.Redis(port=port)
        assert wait(lambda: r.ping() and r.info("persistence")["loading"] == 0, 60)
        results["restart: RDB loaded (s)"] = time.monotonic() - t0
        assert wait(lambda: info(r)["qa_semantic_index_entries"] == args.entries, 60)
        results["restart: index rebuilt (s)"] = time.monotonic() - t0
    finally:
        if os.environ.get("BENCH_PERF"):
            proc.send_signal(2)
        else:
            proc.kill()
        proc.wait()
        httpd.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    print("| measured (%d entries of %d dimensions, %d queries) | value |" % (
        args.entries, args.dims, args.queries))
    print("|---|---|")
    for k, v in results.items():
        print("| %s | %s |" % (k, ("%.3f" % v) if isinstance(v, float) else "{:,}".format(v)))


if __name__ == "__main__":
    sys.exit(main())
