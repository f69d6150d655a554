#!/usr/bin/env python3
"""Sources (docs/sources.md): what citing documents costs, on redis-servers of its own
(127.0.0.1, free ports; stops only what it starts). redis-py required.

    python3 bench/sources_bench.py [--so target/release/libredis_qa.so] [--base OLD.so]
                                   [--entries 100000] [--reps 5]

1. hit: QA.GET hits on an entry without sources and on one citing 3 documents, side by
   side on one server, alternating (redis-benchmark -c 50 -n 200000 -P 16, server on core 0,
   client on core 1): server usec_per_call (INFO commandstats). With --base, the same
   no-sources hit on a server with the OLD build, alternating with this build.
2. memory: used_memory per entry for N entries without sources, then N citing one of 10
   documents, then N citing 3 each: the per-link cost.
3. leaks: N cited entries with a 2 s TTL, then wait until they are gone: used_memory and
   the keys left (per-source sets included) compared with before.
4. invalidation: QA.INVALIDATE <cache> SOURCE <id> of a document cited by 1k, 10k, 100k
   entries: its time (server-side, from INFO commandstats).
"""

import argparse
import os
import socket
import statistics
import subprocess
import tempfile
import time

import redis

A500 = "x" * 500


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Server:
    def __init__(self, so, core="0"):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="qa-src-bench-")
        self.proc = subprocess.Popen(
            ["taskset", "-c", core, "redis-server", "--bind", "127.0.0.1", "--port",
             str(self.port), "--save", "", "--appendonly", "no", "--dir", self.dir,
             "--loadmodule", os.path.abspath(so)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.r = redis.Redis(port=self.port, decode_responses=True)
        deadline = time.time() + 10
        while True:
            try:
                self.r.ping()
                break
            except redis.ConnectionError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()

    def usec(self, cmd):
        s = self.r.info("commandstats").get(f"cmdstat_{cmd}")
        return s["usec_per_call"] if s else float("nan")

    def mem(self):
        return self.r.info("memory")["used_memory"]


def bench(port, *cmd):
    subprocess.run(["taskset", "-c", "1", "redis-benchmark", "-p", str(port), "-c", "50",
                    "-n", "200000", "-P", "16", "-q", *cmd],
                   stdout=subprocess.DEVNULL, check=True)


def hit(so, base, reps):
    s = Server(so)
    s.r.execute_command("QA.SET", "plain", "What is our refund policy?", A500)
    s.r.execute_command("QA.SET", "cited", "What is our refund policy?", A500,
                        "SOURCES", "3", "refunds.md", "policies/returns.md", "faq.md")
    plain, cited = [], []
    for _ in range(reps):
        for cache, out in (("plain", plain), ("cited", cited)):
            s.r.config_resetstat()
            bench(s.port, "QA.GET", cache, "What is our refund policy?")
            out.append(s.usec("qa.get"))
    s.stop()
    print(f"hit, one server, {reps} alternating runs: QA.GET usec_per_call median "
          f"no sources {statistics.median(plain):.3f} ({plain}), "
          f"3 sources {statistics.median(cited):.3f} ({cited})")
    if not base:
        return
    old, new = [], []
    for _ in range(reps):
        for path, out in ((base, old), (so, new)):
            s = Server(path)
            s.r.execute_command("QA.SET", "plain", "What is our refund policy?", A500)
            s.r.config_resetstat()
            bench(s.port, "SET", "k", A500)
            bench(s.port, "QA.GET", "plain", "What is our refund policy?")
            out.append((s.usec("qa.get"), s.usec("set")))
            s.stop()
    ratio = lambda v: statistics.median(q / st for q, st in v)
    print(f"hit without sources, base vs this build, {reps} alternating runs "
          f"(QA.GET usec_per_call, SET of 500 B on the same server): "
          f"base {statistics.median(q for q, _ in old):.3f} ({ratio(old):.2f}x SET), "
          f"this {statistics.median(q for q, _ in new):.3f} ({ratio(new):.2f}x SET); "
          f"runs base {old}, this {new}")


def load(r, cache, n, sources, ttl=86400, prefix="q"):
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        args = ["QA.SET", cache, f"{prefix} {i}", A500, "TTL", str(ttl)]
        ids = sources(i)
        if ids:
            args += ["SOURCES", str(len(ids)), *ids]
        pipe.execute_command(*args)
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


def memory(so, n):
    for label, sources in (
        ("no sources", lambda i: []),
        ("1 source (of 10)", lambda i: [f"doc{i % 10}.md"]),
        ("3 sources (of 10)", lambda i: [f"doc{i % 10}.md", f"doc{(i + 3) % 10}.md",
                                         f"doc{(i + 7) % 10}.md"]),
    ):
        s = Server(so)
        s.r.execute_command("QA.SET", "warm", "q", "a")
        before = s.mem()
        t0 = time.time()
        load(s.r, "c", n, sources)
        took = time.time() - t0
        after = s.mem()
        sets = len(list(s.r.scan_iter("qa:{c}:src:*", count=1000)))
        print(f"memory, {n} entries, {label}: {(after - before) / n:.1f} B per entry "
              f"(used_memory {before} -> {after}), {sets} per-source sets, "
              f"written in {took:.1f} s (pipelined QA.SET)")
        s.stop()


def leaks(so, n):
    for label, sources in (("citing 2 of 11 documents", lambda i: [f"doc{i % 10}.md", "all.md"]),
                           ("without sources (the reference)", lambda i: [])):
        s = Server(so)
        s.r.execute_command("QA.SET", "c", "warm", "a", "TTL", "86400")
        keys_before = s.r.dbsize()
        before = s.mem()
        load(s.r, "c", n, sources, ttl=2)
        loaded = s.mem()
        t0 = time.time()
        while s.r.dbsize() > keys_before and time.time() - t0 < 300:
            time.sleep(0.5)
        left = s.r.dbsize() - keys_before
        after = s.mem()
        sets = len(list(s.r.scan_iter("qa:{c}:src:*", count=1000)))
        print(f"leaks, {n} entries {label}, TTL 2 s: used_memory {before} before, "
              f"{loaded} loaded, {after} after expiry ({after - before:+d} B); keys left "
              f"{left}, per-source sets left {sets}; all gone {time.time() - t0:.1f} s "
              f"after loading")
        s.stop()


def invalidation(so):
    for n in (1000, 10000, 100000):
        s = Server(so)
        load(s.r, "c", n, lambda i: ["hot.md"])
        load(s.r, "c", 1000, lambda i: ["other.md"], prefix="o")
        s.r.config_resetstat()
        t0 = time.time()
        removed = s.r.execute_command("QA.INVALIDATE", "c", "SOURCE", "hot.md")
        wall = time.time() - t0
        usec = s.r.info("commandstats")["cmdstat_qa.invalidate"]["usec"]
        print(f"invalidation of a document cited by {n} entries: {removed} removed in "
              f"{usec / 1000:.1f} ms of server time ({wall * 1000:.1f} ms wall); "
              f"{s.r.dbsize()} keys left")
        s.stop()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--so", default="target/release/libredis_qa.so")
    p.add_argument("--base")
    p.add_argument("--entries", type=int, default=100000)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--only", default="hit,memory,leaks,invalidation")
    a = p.parse_args()
    only = a.only.split(",")
    if "hit" in only:
        hit(a.so, a.base, a.reps)
    if "memory" in only:
        memory(a.so, a.entries)
    if "leaks" in only:
        leaks(a.so, a.entries)
    if "invalidation" in only:
        invalidation(a.so)


if __name__ == "__main__":
    main()
