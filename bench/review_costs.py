#!/usr/bin/env python3
"""What the module costs the rest of Redis, measured side by side in one run.

1. Unrelated writes: server time per call (INFO commandstats usec_per_call) of SET, INCR,
   LPUSH, HSET, SADD and SET ... EX on random keys that are not the module's, on a
   redis-server with the module loaded and one without, alternating, REPS times; the median
   ratio per command. The module subscribes only to generic, expired and evicted keyspace
   events, so writes of other classes should cost the same (SET ... EX also fires the
   generic `expire` event).
2. QA.INVALIDATE and FLUSHALL ASYNC with a large semantic index: N entries with 384-dimension
   vectors (written by hand, then DEBUG RELOAD rebuilds the index), the command's server time.

    python3 bench/review_costs.py [--module target/release/libredis_qa.so] [--reps 5]
        [--vectors 100000]

Servers are pinned to SERVER_CPU (0), redis-benchmark to CLIENT_CPU (1). Traffic goes to
127.0.0.1 only; only the servers started here are stopped. Prints a Markdown section.
"""

import argparse
import os
import socket
import statistics
import struct
import subprocess
import tempfile
import time

import redis

SERVER_CPU = os.environ.get("SERVER_CPU", "0")
CLIENT_CPU = os.environ.get("CLIENT_CPU", "1")

WRITES = [
    ("SET", ["SET", "k:__rand_int__", "v"], "set"),
    ("INCR", ["INCR", "n:__rand_int__"], "incr"),
    ("LPUSH", ["LPUSH", "l:__rand_int__", "v"], "lpush"),
    ("HSET", ["HSET", "h:__rand_int__", "f", "v"], "hset"),
    ("SADD", ["SADD", "s:__rand_int__", "__rand_int__"], "sadd"),
    ("SET ... EX", ["SET", "e:__rand_int__", "v", "EX", "1000"], "set"),
]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, module=None, extra=()):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="qa-costs-")
        args = ["taskset", "-c", SERVER_CPU, "redis-server", "--bind", "127.0.0.1",
                "--port", str(self.port), "--save", "", "--appendonly", "no",
                "--dir", self.dir, *extra]
        if module:
            args += ["--loadmodule", module]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.r = redis.Redis(port=self.port, socket_timeout=120)
        deadline = time.time() + 10
        while True:
            try:
                self.r.ping()
                break
            except redis.ConnectionError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)

    def usec(self, cmd):
        return float(self.r.info("commandstats")[f"cmdstat_{cmd}"]["usec_per_call"])

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def bench(port, args, n=200_000):
    subprocess.run(["taskset", "-c", CLIENT_CPU, "redis-benchmark", "-p", str(port),
                    "-c", "50", "-n", str(n), "-P", "16", "-r", "100000", "-q", *args],
                   check=True, stdout=subprocess.DEVNULL, timeout=300)


def unrelated_writes(module, reps):
    rows = []
    for name, args, stat in WRITES:
        ratios, with_us, without_us = [], [], []
        for _ in range(reps):
            pair = {}
            for label, so in (("without", None), ("with", module)):
                s = Server(so)
                try:
                    s.r.config_resetstat()
                    bench(s.port, args)
                    pair[label] = s.usec(stat)
                finally:
                    s.stop()
            ratios.append(pair["with"] / pair["without"])
            with_us.append(pair["with"])
            without_us.append(pair["without"])
        rows.append((name, statistics.median(without_us), statistics.median(with_us),
                     statistics.median(ratios)))
    return rows


def sem_blob(i, dims=384):
    v = [0.0] * dims
    v[i % dims] = 1.0
    v[(i * 7 + 1) % dims] += 0.5
    return b"qav1" + bytes([7] * 16) + struct.pack("<H", dims) + struct.pack(f"<{dims}f", *v)


def invalidate_cost(module, n):
    s = Server(module, ["--qa.semantic", "yes", "--enable-debug-command", "yes"])
    try:
        p = s.r.pipeline(transaction=False)
        for i in range(n):
            p.hset(f"qa:{{big}}:{i:064x}", mapping={
                "answer": f"answer {i}", "question": f"question {i}", "sem": sem_blob(i)})
            if i % 2000 == 1999:
                p.execute()
        p.execute()
        out = {}
        for cmd, stat in (("QA.INVALIDATE big", "qa.invalidate"), ("FLUSHALL ASYNC", "flushall")):
            s.r.execute_command("DEBUG", "RELOAD")
            deadline = time.time() + 120
            while int(s.r.info("qa")["qa_semantic_index_entries"]) < n:
                if time.time() > deadline:
                    raise RuntimeError("index not rebuilt")
                time.sleep(0.1)
            s.r.config_resetstat()
            s.r.execute_command(*cmd.split())
            out[cmd] = s.usec(stat)
            deadline = time.time() + 60
            while int(s.r.info("qa")["qa_semantic_index_entries"]) > 0:
                if time.time() > deadline:
                    raise RuntimeError("index not emptied")
                time.sleep(0.05)
            if cmd.startswith("FLUSHALL"):
                break
        return out
    finally:
        s.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--module", default="target/release/libredis_qa.so")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--vectors", type=int, default=100_000)
    a = ap.parse_args()
    module = os.path.abspath(a.module)
    print("### Unrelated writes (server µs per call, module loaded vs not, median of "
          f"{a.reps} alternating runs, `redis-benchmark -c 50 -n 200000 -P 16 -r 100000`)\n")
    print("| command | without the module | with the module | ratio |")
    print("|---|---|---|---|")
    for name, without, with_, ratio in unrelated_writes(module, a.reps):
        print(f"| `{name}` | {without:.3f} µs | {with_:.3f} µs | {ratio:.2f}× |")
    print()
    costs = invalidate_cost(module, a.vectors)
    print(f"### With a semantic index of {a.vectors:,} vectors of 384 dimensions\n")
    print("| command | server time (the index is freed by the `qa-index` thread) |")
    print("|---|---|")
    for cmd, us in costs.items():
        print(f"| `{cmd}` | {us:,.0f} µs |")


if __name__ == "__main__":
    main()
