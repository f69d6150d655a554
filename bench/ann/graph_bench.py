#!/usr/bin/env python3
"""The semantic index with its HNSW graph, through a live server (issue #16).

Starts its own redis-server (module loaded, semantic tier on) and the stand-in embeddings +
webhook server of bench/semantic_bench.py on free loopback ports, then:
  * fill: N entries of one scope whose `sem` holds a random unit vector of D dimensions as
    f16 (`qav2`, as the module writes them), written with plain HSETs, indexed by the
    rebuild scan after DEBUG RELOAD; times until every entry is searchable (the exact
    tail) and until the graph holds them all (INFO qa_semantic_index_graph_pending 0);
  * memory: INFO qa_semantic_index_bytes per entry, MEMORY USAGE of entries the module wrote
    (QA.GET misses, f16 `sem`);
  * search: Q semantic misses with unique questions (each searches the whole graph);
    INFO qa_semantic_search_p50_us / p99_us (the index search alone, on the worker);
  * inserts while searching: entries arriving at --insert-rate per second for
    --insert-secs (HSET of a scratch key, then RENAME onto an entry key: the rename's
    keyspace event feeds the index) while a client keeps searching; search p50 / p99 during
    the inserts, and how fast the graph takes them;
  * restart: SAVE, kill -9, restart: RDB load, every entry searchable, graph complete, the
    longest main-thread step of the rebuild scan (INFO qa_semantic_rebuild_step_max_us) and
    the slowest PING seen meanwhile;
  * small scopes: --scopes caches of 10 entries each on a fresh server: index bytes per
    scope beyond the vectors.
Prints a markdown table. Stops only the processes it started. Traffic: 127.0.0.1 only.

    python3 bench/ann/graph_bench.py [--entries 100000] [--dims 384] [--queries 500]
"""

import argparse
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import redis

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from semantic_bench import StandIn, free_port, info, scope_digest, wait  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def sem_f16(scope, v):
    return b"qav2" + scope + len(v).to_bytes(2, "little") + v.astype("<f2").tobytes()


def unit_rows(rng, n, dims):
    v = rng.standard_normal((n, dims)).astype("<f4")
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


class Server:
    def __init__(self, args, hp, work, start=True):
        self.port = free_port()
        module = os.environ.get("QA_MODULE", os.path.join(ROOT, "target/release/libredis_qa.so"))
        self.cmd = [
            os.environ.get("QA_TEST_SERVER", "redis-server"), "--port", str(self.port),
            "--bind", "127.0.0.1", "--dir", work, "--save", "", "--appendonly", "no",
            "--enable-debug-command", "yes", "--loadmodule", module,
            "--qa.backend-format", "webhook", "--qa.backend-url", f"http://127.0.0.1:{hp}/hook",
            "--qa.embed-url", f"http://127.0.0.1:{hp}/v1", "--qa.semantic", "yes",
            "--qa.max-inflight", "4",
        ]
        self.work = work
        self.log = open(os.path.join(work, "redis.log"), "a")
        if start:
            self.start()

    def start(self):
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.r = redis.Redis(port=self.port)
        assert wait(lambda: self.r.ping() and self.r.info("persistence")["loading"] == 0, 600)

    def kill(self):
        self.proc.kill()
        self.proc.wait()


def fill(r, cache, scope, vecs, first=0, chunk=2000):
    pipe = r.pipeline(transaction=False)
    for i, v in enumerate(vecs):
        pipe.hset("qa:{%s}:%032x" % (cache, first + i), mapping={
            "answer": "answer %d" % (first + i),
            "question": "stored question number %d" % (first + i),
            "model": "gpt-4o-mini", "created": "0", "sem": sem_f16(scope, v),
        })
        if i % chunk == chunk - 1:
            pipe.execute()
    pipe.execute()


def graph_done(r, n):
    i = info(r)
    return i["qa_semantic_index_entries"] >= n and i["qa_semantic_index_graph_pending"] == 0


def searches(r, count, tag):
    for q in range(count):
        r.execute_command("QA.GET", "bench", "a question nobody stored %s %d" % (tag, q), "SEMANTIC")
    i = info(r)
    return i["qa_semantic_search_p50_us"], i["qa_semantic_search_p99_us"]


class FillOnly(Exception):
    """--fill-only: the figures after the fill are all that is wanted."""


class Figures(dict):
    """The results, each also logged to stderr as it comes (a long run shows its progress)."""

    def __setitem__(self, k, v):
        print("[graph_bench] %s: %s" % (k, v), file=sys.stderr, flush=True)
        super().__setitem__(k, v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--dims", type=int, default=384)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--insert-rate", type=int, default=2000)
    ap.add_argument("--insert-secs", type=int, default=10)
    ap.add_argument("--scopes", type=int, default=10_000)
    ap.add_argument("--fill-only", action="store_true",
                    help="stop after the fill, memory and search figures (a large N's first look)")
    ap.add_argument("--restart-from", metavar="DIR",
                    help="only a restart of DIR's dump.rdb and graph checkpoint (copied), then searches")
    ap.add_argument("--without-checkpoint", action="store_true",
                    help="with --restart-from: copy dump.rdb only (the graph is built again) and "
                         "stop once every entry is in the index")
    ap.add_argument("--keep", metavar="DIR",
                    help="copy the restart phase's dump.rdb and graph checkpoint into DIR")
    ap.add_argument("--skip-inserts", action="store_true",
                    help="leave out the inserts phase (a large N: fill, restart, small scopes)")
    args = ap.parse_args()
    StandIn.dims = args.dims
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    hp = httpd.server_address[1]
    if args.restart_from:
        try:
            return restart_from(args, hp, args.restart_from)
        finally:
            httpd.shutdown()
    work = tempfile.mkdtemp(prefix="qa-graph-bench.")
    res = Figures()
    n = args.entries
    s = None
    try:
        s = Server(args, hp, work)
        r = s.r
        token = b"0123456789abcdef0123456789abcdef"
        r.execute_command("QA.INVALIDATE", "bench", "TOKEN", token)
        scope = scope_digest("gpt-4o-mini", "", token)
        rng = np.random.default_rng(1)
        used_empty = r.info("memory")["used_memory"]
        rss_empty = r.info("memory")["used_memory_rss"]
        for first in range(0, n, 50_000):
            fill(r, "bench", scope, unit_rows(rng, min(50_000, n - first), args.dims), first)
        t0 = time.monotonic()
        r.execute_command("DEBUG", "RELOAD")
        assert wait(lambda: info(r)["qa_semantic_index_entries"] >= n, 600)
        res["fill: every entry searchable after DEBUG RELOAD (s)"] = time.monotonic() - t0
        assert wait(lambda: graph_done(r, n), 7200, 0.5)
        res["fill: graph complete after DEBUG RELOAD (s)"] = time.monotonic() - t0
        i = info(r)
        res["index bytes per entry (INFO)"] = i["qa_semantic_index_bytes"] / i["qa_semantic_index_entries"]
        # usearch allocates with the C++ allocator, which Redis does not count: used_memory
        # leaves the graph out, the process's RSS has it.
        mem = r.info("memory")
        res["used_memory per entry: hash entry (f16 sem) + index without graph"] = (
            mem["used_memory"] - used_empty) / n
        res["RSS per entry: hash entry (f16 sem) + index with graph"] = (
            mem["used_memory_rss"] - rss_empty) / n
        r.execute_command("QA.RESETSTATS")
        p50, p99 = searches(r, args.queries, "a")
        res["search p50 / p99, graph complete (µs, INFO)"] = "%d / %d" % (p50, p99)
        # Entries as the module writes them (v2 string, f16 `sem`): a 40-byte question and a
        # 200-byte answer.
        sizes = []
        for k in range(20):
            q = "how do I change the billing address %04d" % k
            r.execute_command("QA.SET", "sized", q, "x" * 200, "SEMANTIC")
            reply = r.execute_command("QA.KEY", "sized", q)
            vals = list(reply.values()) if isinstance(reply, dict) else reply
            key = [v for v in vals if isinstance(v, bytes) and v.startswith(b"qa:{sized}:")][0]
            assert b"qav2" in r.get(key)
            sizes.append(r.memory_usage(key))
        res["entry written by the module (40-byte question, 200-byte answer, f16 sem), MEMORY USAGE bytes"] = sum(sizes) / len(sizes)
        if args.fill_only:
            raise FillOnly

        entries = info(r)["qa_semantic_index_entries"]
        if not args.skip_inserts:
            entries = inserts(args, s, r, scope, n, res)
        r = restart(s, entries, res, args.keep)
        r.execute_command("QA.RESETSTATS")
        p50, p99 = searches(r, args.queries, "b")
        res["search p50 / p99 after the restart (µs, INFO)"] = "%d / %d" % (p50, p99)
        s.kill()
        s = None

        # Small scopes.
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work, exist_ok=True)
        s = Server(args, hp, work)
        r = s.r
        rng = np.random.default_rng(3)
        pipe = r.pipeline(transaction=False)
        for c in range(args.scopes):
            for j, v in enumerate(unit_rows(rng, 10, args.dims)):
                pipe.hset("qa:{c%d}:%032x" % (c, j), mapping={
                    "answer": "a", "question": "what is our refund policy %d" % j,
                    "model": "gpt-4o-mini", "created": "0", "sem": sem_f16(scope, v)})
            if c % 200 == 199:
                pipe.execute()
        pipe.execute()
        r.execute_command("DEBUG", "RELOAD")
        assert wait(lambda: info(r)["qa_semantic_index_entries"] >= 10 * args.scopes, 600)
        i = info(r)
        res["%d scopes of 10: index bytes per scope beyond the vectors" % args.scopes] = (
            i["qa_semantic_index_bytes"] - i["qa_semantic_index_vector_bytes"]) / args.scopes
    except FillOnly:
        pass
    finally:
        if s is not None:
            s.kill()
        httpd.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    print("| measured (%d entries of %d dimensions, %d queries) | value |" % (n, args.dims, args.queries))
    print("|---|---|")
    for k, v in res.items():
        print("| %s | %s |" % (k, ("%.1f" % v) if isinstance(v, float) else (
            "{:,}".format(v) if isinstance(v, int) else v)))


def inserts(args, s, r, scope, n, res):
    """Entries arriving at --insert-rate while a client searches; the entries indexed after."""
    r.execute_command("QA.RESETSTATS")
    stop = threading.Event()
    lat = {}

    def searcher():
        c = redis.Redis(port=s.port)
        k = 0
        while not stop.is_set():
            c.execute_command("QA.GET", "bench", "searching while inserting %d" % k, "SEMANTIC")
            k += 1
        lat["n"] = k
    th = threading.Thread(target=searcher)
    th.start()
    total = args.insert_rate * args.insert_secs
    vecs = unit_rows(np.random.default_rng(2), total, args.dims)
    t0 = time.monotonic()
    step = args.insert_rate // 10
    for b in range(0, total, step):
        pipe = r.pipeline(transaction=False)
        for j in range(b, min(b + step, total)):
            pipe.hset("scratch", mapping={
                "answer": "x", "question": "inserted %d" % j, "model": "gpt-4o-mini",
                "created": "0", "sem": sem_f16(scope, vecs[j])})
            pipe.rename("scratch", "qa:{bench}:%032x" % (n + 1_000_000 + j))
        pipe.execute()
        lag = t0 + (b + step) / args.insert_rate - time.monotonic()
        if lag > 0:
            time.sleep(lag)
    took = time.monotonic() - t0
    i = info(r)
    stop.set()
    th.join()
    res["inserts: offered / achieved rate (/s)"] = "%d / %.0f" % (args.insert_rate, total / took)
    res["inserts: search p50 / p99 meanwhile (µs, INFO)"] = "%d / %d" % (
        i["qa_semantic_search_p50_us"], i["qa_semantic_search_p99_us"])
    res["inserts: searches meanwhile"] = lat["n"]
    res["inserts: not in the graph yet at the end"] = i["qa_semantic_index_graph_pending"]
    assert wait(lambda: info(r)["qa_semantic_index_graph_pending"] == 0, 3600, 0.2)
    res["inserts: graph absorption rate (/s)"] = total / (time.monotonic() - t0)
    entries = info(r)["qa_semantic_index_entries"]
    return entries


def restart(s, entries, res, keep=None):
    """SAVE (which writes the graph checkpoint), kill -9, restart (see `start_measured`).
    Returns the new connection."""
    r = s.r
    t0 = time.monotonic()
    r.save()
    res["restart: SAVE with the graph checkpoint (s)"] = time.monotonic() - t0
    i = info(r)
    res["restart: graph checkpoint written (ms, INFO) / bytes per entry"] = "%d / %.0f" % (
        i["qa_semantic_graph_checkpoint_ms"], i["qa_semantic_graph_checkpoint_bytes"] / entries)
    s.kill()
    if keep:
        os.makedirs(keep, exist_ok=True)
        for f in os.listdir(s.work):
            if f.startswith("dump.rdb"):
                shutil.copy(os.path.join(s.work, f), keep)
    return start_measured(s, res)


def start_measured(s, res, graph=True):
    """Starts the server on its directory's RDB and graph checkpoint: RDB load, every entry
    in the index (the rebuild scan done and applied: INFO qa_semantic_rebuilds), graph
    complete (read back from the checkpoint), the longest main-thread step and the slowest
    PING meanwhile. Returns the new connection."""
    t0 = time.monotonic()
    s.proc = subprocess.Popen(s.cmd, stdout=s.log, stderr=subprocess.STDOUT)
    r = s.r = redis.Redis(port=s.port)
    worst = [0.0]
    done = threading.Event()

    def pinger():
        c = redis.Redis(port=s.port)
        while not done.is_set():
            t = time.monotonic()
            try:
                c.ping()
            except redis.exceptions.BusyLoadingError:
                pass  # replied LOADING: still a reply
            except redis.exceptions.ConnectionError:
                time.sleep(0.01)  # not listening yet
                continue
            worst[0] = max(worst[0], time.monotonic() - t)
            time.sleep(0.001)
    assert wait(lambda: r.ping(), 600)
    pt = threading.Thread(target=pinger)
    pt.start()
    assert wait(lambda: r.info("persistence")["loading"] == 0, 600)
    res["restart: RDB loaded (s)"] = time.monotonic() - t0
    assert wait(lambda: info(r)["qa_semantic_rebuilds"] >= 1, 600, 0.05)
    res["restart: every entry searchable (s)"] = time.monotonic() - t0
    if graph:
        assert wait(lambda: info(r)["qa_semantic_index_graph_pending"] == 0, 7200, 0.05)
        res["restart: graph complete (s)"] = time.monotonic() - t0
    done.set()
    pt.join()
    i = info(r)
    res["restart: entries in the index"] = i["qa_semantic_index_entries"]
    res["restart: longest rebuild step on the main thread (µs, INFO)"] = i["qa_semantic_rebuild_step_max_us"]
    res["restart: vectors read back from the checkpoint / of them unclaimed (INFO)"] = "%d / %d" % (
        i["qa_semantic_graph_restored"], i["qa_semantic_graph_restored_unclaimed"])
    res["restart: checkpoint read (ms, INFO, during the RDB load)"] = i["qa_semantic_graph_restore_ms"]
    res["restart: slowest PING from the start (ms; LOADING replies count)"] = worst[0] * 1000
    res["restart: index bytes per entry (INFO)"] = (
        i["qa_semantic_index_bytes"] / max(1, i["qa_semantic_index_entries"]))
    return r


def restart_from(args, hp, src):
    """--restart-from: a restart of a saved data set (dump.rdb and its graph checkpoint,
    copied into a fresh directory), then the searches."""
    res = Figures()
    work = tempfile.mkdtemp(prefix="qa-graph-bench.")
    s = None
    try:
        for f in os.listdir(src):
            if f == "dump.rdb" or (f.startswith("dump.rdb") and not args.without_checkpoint):
                shutil.copy(os.path.join(src, f), work)
        s = Server(args, hp, work, start=False)
        r = start_measured(s, res, not args.without_checkpoint)
        if not args.without_checkpoint:
            r.execute_command("QA.RESETSTATS")
            p50, p99 = searches(r, args.queries, "b")
            res["search p50 / p99 after the restart (µs, INFO)"] = "%d / %d" % (p50, p99)
    finally:
        if s is not None:
            s.kill()
        shutil.rmtree(work, ignore_errors=True)
    print("| measured (restart of %s, %d queries) | value |" % (src, args.queries))
    print("|---|---|")
    for k, v in res.items():
        print("| %s | %s |" % (k, ("%.1f" % v) if isinstance(v, float) else (
            "{:,}".format(v) if isinstance(v, int) else v)))


if __name__ == "__main__":
    sys.exit(main())
