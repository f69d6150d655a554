#!/usr/bin/env python3
"""redis-qa benchmarks. Started by bench/run.sh, which owns the processes (redis-server with the
module, three demo backends) and passes their ports; this file only sends traffic to 127.0.0.1,
measures, checks every reply, and writes the markdown report.

Sections (`--sections`, comma-separated names, in this order):
  hit       1. hit path vs GET (redis-benchmark, pipeline 1 and 16, server usec_per_call)
  miss      2. miss overhead (QA.GET miss latency vs a direct POST to the same backend)
  resp      3. responsiveness (PING latency while 500 misses wait on a 2 s backend, vs idle)
  stampede  4. stampede (1000 concurrent identical misses on a 1 s backend), QA.GET vs the
               client-side way (each client GETs, misses, calls the backend)
  client    5. the client-side way vs QA.GET over 10k questions with 30% repeats (client_side.py)
  memory    6. bytes per entry vs SETEX (memory_scale.py, its own redis-server)
  scale     7. hits with 10k/100k/1M entries, RDB save and load (memory_scale.py, its own server)
  profile   where a hit's time goes (profile_hit.py)
  charts    PNG charts next to the report (charts.py; skipped without matplotlib)

Also `bench.py --pinger PORT DURATION`: the PING client used by (3), run as its own process so
the load generator's work never delays it.
"""

import argparse
import asyncio
import collections
import datetime
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time

import client_side
import memory_scale

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CACHE = "bench"
HIT_QUESTION = "What is our refund policy?"
# Not ASCII: goes through NFKC + Unicode lowercasing instead of the ASCII fast path.
HIT_QUESTION_UNICODE = "Quelle est votre politique de remboursement ? Ça dépend ?"
# The same question without its accents: as long (two SHA-256 blocks for its key), all ASCII.
HIT_QUESTION_TWIN = "Quelle est votre politique de remboursement ? Ca depend ?"
# Questions asked once each in turn (redis-benchmark puts 12 digits in place of __rand_int__):
# more of them than QA.GET remembers keys for (256), so nearly every hit normalizes and hashes
# its question, as the first hit of a question does.
RAND_QUESTIONS = 10_000
RAND_TEMPLATES = {
    "ascii": "What is our refund policy __rand_int__?",
    "non-ascii": "Quelle est votre politique de remboursement __rand_int__ ? Ça dépend ?",
    "twin": "Quelle est votre politique de remboursement __rand_int__ ? Ca depend ?",
}
ANSWER_500 = ("Refunds are accepted within 30 days of purchase with a receipt. " * 10)[:500]
MODEL = "gpt-4o-mini"
SECTIONS = ["hit", "miss", "resp", "stampede", "client", "profile", "memory", "scale", "charts"]


# What was measured about this machine before the first run (kept in the page so a reader
# needs nothing outside the repository).
NOISE_MD = """### How noisy this machine is

Measured before the project's first benchmark, with nothing of ours loaded:

- The two cores are shared with other jobs (builds and test runs of other work). The same
  command's throughput moves by about ±20% from one run to the next, and a single client's
  latency by up to 2×. So a figure here is only compared with figures from the same run: the
  two commands alternate (A B A B ...) and each is the median of at least 5 repetitions.
- Where the processes run matters: a client on the other core than the server pays about
  15 µs per round trip more than one on the same core. Every run compared pins server and
  client the same way (`taskset -c`, see the table above).
- The steadiest figure is the server's own CPU time per call (`usec_per_call` in
  `INFO commandstats`); req/s and latency percentiles move with the neighbours' load.
- Reference points for Debian's redis-server 7.0.15 alone (400-byte value,
  `redis-benchmark -c 50 -n 200000`): `GET` about 92k req/s at pipeline 1 and 760k at
  pipeline 16, 0.27 µs of server time per call; a Lua `EVAL` wrapping the same `GET` about
  83k (0.90×) and 189k (0.25×), 3.21 µs per call. Pipeline 1 hides a command's cost behind
  the network round trip, pipeline 16 exposes it, so both are reported.
- One client: `redis-benchmark -c 1` `GET` p50 about 0.03 ms; from redis-py on one
  connection, `GET` p50 about 45–70 µs, to which `md5(question.lower())` in the application
  adds 1–2 µs.
- The floor for any module command that answers from a key: a minimal command that only
  opens a string key and replies a slice of it (no hashing, no normalization) costs 0.51 µs of
  server time against 0.29–0.36 µs for `GET` of the same 500-byte value, 0.79–0.89× `GET`'s
  throughput at pipeline 16 (`redis-benchmark -c 50 -P 16`, pinned, 3 alternating runs,
  measured 2026-12-02). Each 0.1 µs added on top costs about 7% of throughput at pipeline 16.
"""


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    v = sorted(values)
    if not v:
        return float("nan")
    k = max(0, min(len(v) - 1, int(round(p / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


def med(values):
    return statistics.median(values) if values else float("nan")


def expected_answer(question):
    return f'Answer to "{question}" (model {MODEL})'


ANOMALIES = []


def describe(reply):
    """A reply or an exception, short, for reports."""
    if isinstance(reply, Exception):
        return f"{type(reply).__name__}: {reply}"[:160]
    return repr(reply)[:160]


def anomaly(msg):
    log("ANOMALY: " + msg)
    ANOMALIES.append(msg)


# ---------------------------------------------------------------------------------------------
# PING client (its own process)


PING_INTERVAL_S = 0.0002


def pinger(port, duration):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(b"*1\r\n$4\r\nPING\r\n")
    assert s.recv(64) == b"+PONG\r\n"
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    out = []
    start = time.perf_counter()
    end = start + duration
    ping = b"*1\r\n$4\r\nPING\r\n"
    next_at = start
    while True:
        # Paced: the pinger sleeps between pings, so when it runs real-time it never starves the
        # load generator and the demo backends that share its core.
        now = time.perf_counter()
        if now < next_at:
            time.sleep(next_at - now)
        t0 = time.perf_counter()
        if t0 >= end:
            break
        next_at = t0 + PING_INTERVAL_S
        s.sendall(ping)
        buf = b""
        while not buf.endswith(b"\r\n"):
            chunk = s.recv(64)
            if not chunk:
                raise SystemExit("connection closed")
            buf += chunk
        t1 = time.perf_counter()
        if buf != b"+PONG\r\n":
            raise SystemExit(f"bad reply {buf!r}")
        out.append((round((t0 - start) * 1e3, 3), round((t1 - t0) * 1e6, 1)))
    print(json.dumps(out), flush=True)


# ---------------------------------------------------------------------------------------------
# helpers


class Ctx:
    def __init__(self, a):
        import redis

        self.a = a
        self.port = a.redis_port
        self.r = redis.Redis(host="127.0.0.1", port=a.redis_port, socket_timeout=30)
        self.reps = int(os.environ.get("REPS", "5"))
        self.run_id = f"{int(time.time())}-{os.getpid()}"
        # The PING client runs SCHED_FIFO when allowed, so that the load generator and the demo
        # backends on its core cannot delay it: what it measures is then the server.
        try:
            self.realtime_pinger = subprocess.run(["chrt", "-f", "10", "true"],
                                                  capture_output=True, timeout=10).returncode == 0
        except Exception:
            self.realtime_pinger = False

    def qa_info(self):
        return self.r.info("qa")

    def backend_url(self, port):
        return f"http://127.0.0.1:{port}/v1"

    def alive(self):
        try:
            return self.r.ping()
        except Exception:
            return False


def redis_benchmark(port, pipeline, cmd, n=200000, clients=50, timeout=180, rand=0):
    argv = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", str(clients),
            "-n", str(n), "-P", str(pipeline), "--csv"] + (["-r", str(rand)] if rand else []) + list(cmd)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    lines = [l for l in p.stdout.strip().splitlines() if l.startswith('"') and not l.startswith('"test"')]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"redis-benchmark failed: {p.returncode} {p.stdout[-500:]} {p.stderr[-500:]}")
    f = [x.strip('"') for x in lines[-1].split('","')]
    return {"rps": float(f[1]), "avg_ms": float(f[2]), "p50_ms": float(f[4]),
            "p95_ms": float(f[5]), "p99_ms": float(f[6]), "max_ms": float(f[7])}


# ---------------------------------------------------------------------------------------------
# 1. hit path vs GET


def prepare_hit_entry(c, question):
    """One miss to learn the key, then the entry rewritten with a 500-byte answer (QA.SET)."""
    # Entry keys only: `qa:{cache}:` and 32 hex digits (not the cache's `:gen` key).
    before = set(c.r.keys(f"qa:{{{CACHE}}}:" + "?" * 32))
    first = c.r.execute_command("QA.GET", CACHE, question).decode()
    if first != expected_answer(question):
        anomaly(f"first miss replied {first!r}, expected {expected_answer(question)!r}")
    new = [k for k in c.r.keys(f"qa:{{{CACHE}}}:" + "?" * 32) if k not in before]
    if len(new) != 1:
        raise RuntimeError(f"expected one new entry key, found {new}")
    key = new[0]
    c.r.execute_command("QA.SET", CACHE, question, ANSWER_500)
    got = c.r.execute_command("QA.GET", CACHE, question)
    if got != ANSWER_500.encode():
        anomaly(f"hit returned {got[:60]!r}... ({len(got)} bytes), not the stored 500-byte answer")
    return key.decode()


def bench_hit(c):
    log("1. hit path vs GET")
    c.r.config_set("qa.backend-url", c.backend_url(c.a.backend_100))
    key = prepare_hit_entry(c, HIT_QUESTION)
    key_u = prepare_hit_entry(c, HIT_QUESTION_UNICODE)
    prepare_hit_entry(c, HIT_QUESTION_TWIN)
    ttl = c.r.ttl(key)
    # The GET side gets the same 500 bytes and a TTL like the entry's, so both pay the expire check.
    c.r.set("bench:get500", ANSWER_500, ex=3600)
    assert c.r.get("bench:get500") == ANSWER_500.encode()

    # Every question of the random sides has an entry (QA.SET, the same 500-byte answer).
    for template in RAND_TEMPLATES.values():
        p = c.r.pipeline(transaction=False)
        for i in range(RAND_QUESTIONS):
            p.execute_command("QA.SET", CACHE, template.replace("__rand_int__", f"{i:012d}"), ANSWER_500)
        if any(r != b"OK" for r in p.execute()):
            anomaly("QA.SET of the random questions did not reply OK")
    p = c.r.pipeline(transaction=False)
    for i in range(RAND_QUESTIONS):
        p.set(f"bench:get500:{i:012d}", ANSWER_500, ex=3600)
    p.execute()
    names = {m.get(b"name", m.get("name")) for m in c.r.module_list()}
    floor = b"floor" in names or "floor" in names
    # (name, command, commandstats line, pipelines, random range)
    sides = [
        ("GET", ["GET", "bench:get500"], "cmdstat_get", (1, 16), 0),
        ("QA.GET", ["QA.GET", CACHE, HIT_QUESTION], "cmdstat_qa.get", (1, 16), 0),
        ("QA.GET (non-ASCII question)", ["QA.GET", CACHE, HIT_QUESTION_UNICODE], "cmdstat_qa.get", (1, 16), 0),
        ("QA.GET (its ASCII twin)", ["QA.GET", CACHE, HIT_QUESTION_TWIN], "cmdstat_qa.get", (1, 16), 0),
    ]
    if floor:
        sides.append(("FLOOR.GET (module API floor)", ["FLOOR.GET", key], "cmdstat_floor.get", (16,), 0))
    else:
        anomaly("the floor module (bench/floor) is not loaded: no FLOOR.GET side")
    sides += [(f"GET, {RAND_QUESTIONS:,} keys", ["GET", "bench:get500:__rand_int__"], "cmdstat_get", (16,),
               RAND_QUESTIONS)]
    sides += [
        (f"QA.GET, {RAND_QUESTIONS:,} questions ({kind})", ["QA.GET", CACHE, t], "cmdstat_qa.get", (16,),
         RAND_QUESTIONS)
        for kind, t in RAND_TEMPLATES.items()
    ]
    n = 200000
    res = {(name, p): [] for name, _, _, ps, _ in sides for p in ps}
    for rep in range(c.reps):
        for p in (1, 16):
            for name, cmd, stat, ps, rand in sides:  # A B C A B C ...
                if p not in ps:
                    continue
                hits0 = int(c.qa_info().get("qa_hits", 0))
                c.r.config_resetstat()
                m = redis_benchmark(c.port, p, cmd, n=n, rand=rand)
                cs = c.r.info("commandstats").get(stat, {})
                hits = int(c.qa_info().get("qa_hits", 0)) - hits0
                m["usec_per_call"] = float(cs.get("usec_per_call", "nan"))
                calls = int(cs.get("calls", 0))
                failed = int(cs.get("failed_calls", 0)) + int(cs.get("rejected_calls", 0))
                if calls != n or failed:
                    anomaly(f"{name} P{p}: {calls} calls counted, {failed} failed (expected {n}, 0)")
                if name.startswith("QA.GET") and hits != n:
                    anomaly(f"{name} P{p}: qa_hits grew by {hits}, expected {n}")
                res[(name, p)].append(m)
        log(f"   rep {rep + 1}/{c.reps}: " + ", ".join(
            f"{nm} P{p} {res[(nm, p)][-1]['rps']:.0f}/s {res[(nm, p)][-1]['usec_per_call']:.2f}us"
            for nm, _, _, ps, _ in sides for p in ps))
    if c.r.execute_command("QA.GET", CACHE, HIT_QUESTION) != ANSWER_500.encode():
        anomaly("after the hit runs, QA.GET no longer returns the 500-byte answer")
    return {"sides": [(s[0], s[3]) for s in sides], "res": res, "n": n, "key": key, "key_u": key_u,
            "ttl": ttl, "floor": floor}


def md_hit(h, reps):
    res = h["res"]
    out = []
    out.append("## 1. Hit path vs GET\n")
    out.append(
        f"`redis-benchmark -c 50 -n {h['n']} -P {{1,16}}` for each command, in the order GET, QA.GET, "
        f"QA.GET (non-ASCII question), repeated {reps} times (A B C A B C ...); `CONFIG RESETSTAT` "
        "before each run and `INFO commandstats` after it. The QA.GET entry is a real entry "
        "(made by one miss) then rewritten by `QA.SET` with a 500-byte answer; GET reads a "
        "500-byte string that also has a TTL (3600 s), so both pay the expiry check. Medians of "
        f"{reps}; the range is min–max over the repetitions. Questions: `{HIT_QUESTION}` (ASCII "
        f"fast path), `{HIT_QUESTION_UNICODE}` (NFKC path) and its ASCII twin `{HIT_QUESTION_TWIN}` "
        "(as long, so as much hashing: what the non-ASCII characters cost by themselves).\n")
    out.append("| command | pipeline | req/s (median) | req/s range | p50 ms | p99 ms | server µs/call |")
    out.append("|---|---|---|---|---|---|---|")
    for p in (1, 16):
        for name, ps in h["sides"]:
            if p not in ps:
                continue
            ms = res[(name, p)]
            rps = [m["rps"] for m in ms]
            out.append(
                f"| {name} | {p} | {med(rps):,.0f} | {min(rps):,.0f}–{max(rps):,.0f} | "
                f"{med([m['p50_ms'] for m in ms]):.3f} | {med([m['p99_ms'] for m in ms]):.3f} | "
                f"{med([m['usec_per_call'] for m in ms]):.2f} |")
    out.append("")
    out.append("Ratios, computed per repetition (each QA.GET run against the GET run next to it), "
               "then the median:\n")
    out.append("| pipeline | QA.GET / GET req/s | non-ASCII QA.GET / GET req/s | QA.GET − GET server µs/call | QA.GET / GET server µs/call |")
    out.append("|---|---|---|---|---|")
    summary = {}
    for p in (1, 16):
        g = res[("GET", p)]
        q = res[("QA.GET", p)]
        u = res[("QA.GET (non-ASCII question)", p)]
        r_q = med([a["rps"] / b["rps"] for a, b in zip(q, g)])
        r_u = med([a["rps"] / b["rps"] for a, b in zip(u, g)])
        d_us = med([a["usec_per_call"] - b["usec_per_call"] for a, b in zip(q, g)])
        r_us = med([a["usec_per_call"] / b["usec_per_call"] for a, b in zip(q, g)])
        summary[p] = (r_q, r_u, d_us, r_us)
        out.append(f"| {p} | {r_q:.2f}× | {r_u:.2f}× | {d_us:+.2f} | {r_us:.1f}× |")
    out.append("")
    qus = med([m["usec_per_call"] for m in res[("QA.GET", 16)]])
    gus = med([m["usec_per_call"] for m in res[("GET", 16)]])
    uus = med([m["usec_per_call"] for m in res[("QA.GET (non-ASCII question)", 16)]])
    tus = med([m["usec_per_call"] for m in res[("QA.GET (its ASCII twin)", 16)]])
    r_ut = med([a["usec_per_call"] / b["usec_per_call"]
                for a, b in zip(res[("QA.GET (non-ASCII question)", 16)], res[("QA.GET (its ASCII twin)", 16)])])
    r_uq = med([a["usec_per_call"] / b["usec_per_call"]
                for a, b in zip(res[("QA.GET (non-ASCII question)", 16)], res[("QA.GET", 16)])])
    out.append(
        f"Server time per hit (P16 runs, median): QA.GET {qus:.2f} µs, non-ASCII QA.GET {uus:.2f} µs "
        f"({r_uq:.2f}× the short ASCII question, {r_ut:.2f}× its ASCII twin of the same length at "
        f"{tus:.2f} µs; ratios per repetition, median), GET {gus:.2f} µs. At pipeline 1 the round trip dominates and the gap mostly hides; at "
        "pipeline 16 the server's per-command cost shows.\n")
    h["summary"] = summary
    h["us"] = (qus, gus, uus)
    h["non_ascii"] = (r_uq, r_ut, tus)
    # The floor: what the module API costs a command that answers from a key.
    if h.get("floor"):
        fl = res[("FLOOR.GET (module API floor)", 16)]
        fus = med([m["usec_per_call"] for m in fl])
        r_fg = med([a["usec_per_call"] / b["usec_per_call"] for a, b in zip(fl, res[("GET", 16)])])
        r_qf = med([a["usec_per_call"] / b["usec_per_call"] for a, b in zip(res[("QA.GET", 16)], fl)])
        r_rps = med([a["rps"] / b["rps"] for a, b in zip(fl, res[("GET", 16)])])
        h["floor_us"] = (fus, r_fg, r_qf, r_rps)
        out.append(
            f"**The module API's floor**: `FLOOR.GET <entry key>` (bench/floor, a module of its own loaded "
            "beside redis-qa) opens the key, reads its string in place and replies its last 500 bytes, "
            f"nothing else: {fus:.2f} µs of server time, {r_fg:.1f}× GET's (per repetition, median), "
            f"{r_rps:.2f}× GET's throughput at pipeline 16. A QA.GET hit costs {r_qf:.2f}× that floor: "
            "its own work (the question's key, the entry's header, the counters) is the difference.\n")
    # First hits: questions asked in turn from 10,000, so the remembered keys rarely apply.
    rk = {kind: f"QA.GET, {RAND_QUESTIONS:,} questions ({kind})" for kind in RAND_TEMPLATES}
    ra = res[(rk["ascii"], 16)]
    rn = res[(rk["non-ascii"], 16)]
    rt = res[(rk["twin"], 16)]
    rg = res[(f"GET, {RAND_QUESTIONS:,} keys", 16)]
    aus, nus, tws, gks = (med([m["usec_per_call"] for m in x]) for x in (ra, rn, rt, rg))
    r_ag = med([a["usec_per_call"] / b["usec_per_call"] for a, b in zip(ra, rg)])
    r_ag_rps = med([a["rps"] / b["rps"] for a, b in zip(ra, rg)])
    r_na = med([a["usec_per_call"] / b["usec_per_call"] for a, b in zip(rn, ra)])
    r_nt = med([a["usec_per_call"] / b["usec_per_call"] for a, b in zip(rn, rt)])
    h["first_hits"] = (aus, nus, tws, r_na, r_nt)
    out.append(
        f"**Questions asked in turn** (`redis-benchmark -r {RAND_QUESTIONS} -P 16`, each of "
        f"{RAND_QUESTIONS:,} questions per kind stored beforehand, e.g. `{RAND_TEMPLATES['non-ascii']}`): "
        "QA.GET remembers the keys of 256 recently hit questions, so a question asked again "
        "skips normalization and hashing; with 10,000 in turn nearly every hit normalizes and "
        f"hashes, as a question's first hit does. Server time per hit: ASCII {aus:.2f} µs, "
        f"non-ASCII {nus:.2f} µs ({r_na:.2f}× the ASCII one, {r_nt:.2f}× its ASCII twin of the same "
        f"length at {tws:.2f} µs; ratios per repetition, median). These include more cache misses "
        "than one hot entry (10,000 entries and keys touched in turn): GET of 10,000 500-byte keys "
        f"in turn takes {gks:.2f} µs, and the ASCII questions in turn take {r_ag:.1f}× its server time, "
        f"{r_ag_rps:.2f}× its throughput.\n")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# 2. miss overhead


def direct_post(port, question):
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": question}]}).encode()
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/v1/chat/completions", body=body,
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    t1 = time.perf_counter()
    conn.close()
    ans = json.loads(data)["choices"][0]["message"]["content"]
    if ans != expected_answer(question):
        anomaly(f"backend answered {ans!r} directly")
    return (t1 - t0) * 1e3


def bench_miss(c):
    log("2. miss overhead")
    c.r.config_set("qa.backend-url", c.backend_url(c.a.backend_100))
    c.r.config_set("qa.timeout-ms", 30000)
    per_round = 40
    miss, direct, rounds = [], [], []

    def one_miss(q):
        t0 = time.perf_counter()
        got = c.r.execute_command("QA.GET", CACHE, q)
        dt = (time.perf_counter() - t0) * 1e3
        if got.decode() != expected_answer(q):
            anomaly(f"miss for {q!r} replied {got[:80]!r}")
        return dt

    calls0 = int(c.qa_info()["qa_backend_calls"])
    for i in range(5):  # warm-up (worker thread start, connections), not counted
        one_miss(f"warm-up miss {c.run_id} {i}?")
        direct_post(c.a.backend_100, f"warm-up direct {c.run_id} {i}?")
    for rnd in range(c.reps):
        m_r, d_r = [], []
        for i in range(per_round):  # A B A B ...
            m_r.append(one_miss(f"miss question {c.run_id} r{rnd} n{i}?"))
            d_r.append(direct_post(c.a.backend_100, f"direct question {c.run_id} r{rnd} n{i}?"))
        miss += m_r
        direct += d_r
        rounds.append((med(m_r), med(d_r)))
        log(f"   round {rnd + 1}/{c.reps}: miss p50 {med(m_r):.2f} ms, direct p50 {med(d_r):.2f} ms")
    info = c.qa_info()
    calls = int(info["qa_backend_calls"]) - calls0
    want = 5 + c.reps * per_round
    if calls != want:
        anomaly(f"miss benchmark: {calls} backend calls for {want} unique misses")
    # The module's own view of its backend calls, where this version reports it.
    own = {k: info[k] for k in ("qa_backend_latency_p50_ms", "qa_backend_latency_p99_ms",
                                "qa_backend_retries", "qa_backend_errors") if k in info}
    return {"miss": miss, "direct": direct, "rounds": rounds, "n": len(miss), "calls": calls,
            "own": own}


def md_miss(m, reps):
    miss, direct = m["miss"], m["direct"]
    rows = [("QA.GET miss (redis-py, round trip)", miss), ("direct POST to the backend (http.client)", direct)]
    out = ["## 2. Miss overhead\n"]
    out.append(
        f"Backend delay 100 ms. {m['n']} misses with unique questions from one redis-py connection, "
        "sequential, each followed by a direct HTTP POST of the same kind of request to the same "
        "backend from Python (new TCP connection each time, like the module's call), so both "
        f"sides alternate (A B A B) in {reps} rounds of {m['n'] // reps}; 5 warm-up pairs first, "
        f"not counted. Backend calls counted by `qa_backend_calls`: {m['calls']} (one per miss, "
        "warm-up included).\n")
    out.append("| measured | p50 ms | p90 ms | p99 ms | max ms |")
    out.append("|---|---|---|---|---|")
    for name, v in rows:
        out.append(f"| {name} | {pct(v, 50):.2f} | {pct(v, 90):.2f} | {pct(v, 99):.2f} | {max(v):.2f} |")
    ov50 = pct(miss, 50) - pct(direct, 50)
    ov99 = pct(miss, 99) - pct(direct, 99)
    rr = med([a - b for a, b in m["rounds"]])
    out.append("")
    out.append("| overhead | p50 ms | p99 ms |")
    out.append("|---|---|---|")
    out.append(f"| miss − 100 ms (backend delay) | {pct(miss, 50) - 100:.2f} | {pct(miss, 99) - 100:.2f} |")
    out.append(f"| direct POST − 100 ms (HTTP + demo backend itself) | {pct(direct, 50) - 100:.2f} | {pct(direct, 99) - 100:.2f} |")
    out.append(f"| **miss − direct POST (what the module adds)** | **{ov50:.2f}** | **{ov99:.2f}** |")
    out.append("")
    out.append(f"Median over the {reps} rounds of (round's miss p50 − round's direct p50): {rr:.2f} ms. "
               f"Misses over 150 ms: {sum(1 for x in miss if x > 150)}; direct POSTs over 150 ms: "
               f"{sum(1 for x in direct if x > 150)}.\n")
    if m.get("own"):
        out.append("The module's own counters after this section (`INFO qa`; latency fields cover every "
                   "backend call since the server started): "
                   + ", ".join(f"`{k}` {v}" for k, v in m["own"].items()) + ".\n")
    m["summary"] = (pct(miss, 50) - 100, pct(miss, 99) - 100, ov50, ov99, rr)
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# 3. responsiveness


async def open_clients(port, n):
    import redis.asyncio as aioredis
    clients = [aioredis.Redis(host="127.0.0.1", port=port, single_connection_client=True,
                              socket_timeout=60, socket_connect_timeout=10) for _ in range(n)]
    # Opened in batches so the server's backlog is never the bottleneck.
    for i in range(0, n, 100):
        await asyncio.gather(*(cl.ping() for cl in clients[i:i + 100]))
    return clients


async def close_clients(clients):
    await asyncio.gather(*(cl.aclose() for cl in clients), return_exceptions=True)


async def timed(cl, *args):
    t0 = time.perf_counter()
    try:
        r = await cl.execute_command(*args)
    except Exception as e:  # reported as a wrong reply
        r = e
    return r, time.perf_counter() - t0, t0


async def ping_window(c, duration, load_n):
    """Runs the pinger for `duration` s; if load_n, fires load_n unique misses 0.2 s in."""
    clients = await open_clients(c.port, load_n) if load_n else []
    argv = [sys.executable, os.path.join(HERE, "bench.py"), "--pinger", str(c.port), str(duration)]
    if c.realtime_pinger:
        argv = ["chrt", "-f", "10"] + argv
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert line.strip() == b"ready", line
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        t_go = time.perf_counter()
        load = None
        if load_n:
            await asyncio.sleep(0.2)
            qs = [f"responsiveness {c.run_id} {time.time_ns()} q{i}?" for i in range(load_n)]
            t0 = time.perf_counter()
            results = await asyncio.wait_for(
                asyncio.gather(*(timed(cl, "QA.GET", CACHE, q) for cl, q in zip(clients, qs))), 60)
            t1 = time.perf_counter()
            wrong = [(q, r) for q, (r, _, _) in zip(qs, results)
                     if not isinstance(r, bytes) or r.decode() != expected_answer(q)]
            if wrong:
                kinds = collections.Counter(describe(r) for _, r in wrong)
                info = c.qa_info()
                anomaly(f"responsiveness: {len(wrong)}/{load_n} misses got a wrong reply: "
                        + "; ".join(f"{n}× {k}" for k, n in kinds.most_common(3))
                        + f" (INFO qa now: backend_errors={info.get('qa_backend_errors')}, "
                        f"refused_busy={info.get('qa_refused_busy')}, client_timeouts={info.get('qa_client_timeouts')})")
            load = {"start_ms": (t0 - t_go) * 1e3, "end_ms": (t1 - t_go) * 1e3, "all_answered_s": t1 - t0,
                    "slowest_s": max(d for _, d, _ in results), "wrong": len(wrong)}
        out, _ = await asyncio.wait_for(proc.communicate(), duration + 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await close_clients(clients)
    lat = json.loads(out)
    return {"lat": [l for _, l in lat], "series": lat, "load": load}


def parse_cpus(spec):
    """taskset -c syntax (0 / 0,1 / 0-1) to a set of CPU numbers."""
    out = set()
    for part in str(spec).split(","):
        if "-" in part:
            lo, hi = part.split("-")
            out.update(range(int(lo), int(hi) + 1))
        elif part.strip():
            out.add(int(part))
    return out


def pin_server_threads(pid, main_cpus, other_cpus):
    """Main thread on main_cpus, every other thread of redis-server (module workers, reaper, bio)
    on other_cpus. New threads inherit the main thread's affinity."""
    moved = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), main_cpus if int(tid) == pid else other_cpus)
            moved += 1
        except OSError:
            pass  # a thread that just exited
    return moved


VARIANTS = [
    ("shared", "500 misses waiting, worker threads on the server's core"),
    ("apart", "500 misses waiting, worker threads moved to the client core"),
]


def bench_responsiveness(c):
    log("3. responsiveness")
    n = 500
    c.r.config_set("qa.backend-url", c.backend_url(c.a.backend_2000))
    c.r.config_set("qa.max-inflight", 512)
    c.r.config_set("qa.timeout-ms", 20000)
    duration = 3.0
    server_cpus = parse_cpus(os.environ.get("SERVER_CPU", "0"))
    client_cpus = parse_cpus(os.environ.get("CLIENT_CPU", "1"))
    variants = [v for v in VARIANTS if v[0] == "shared" or server_cpus != client_cpus]
    pid = c.a.redis_pid
    # Warm-up window, not reported: starts the 500 worker threads (they stay for 60 s idle).
    asyncio.run(ping_window(c, duration, n))
    idle, loaded = [], {k: [] for k, _ in variants}
    for rep in range(c.reps):  # idle, loaded (shared), loaded (apart), idle, ...
        pin_server_threads(pid, server_cpus, server_cpus)
        idle.append(asyncio.run(ping_window(c, duration, 0)))
        msg = f"   rep {rep + 1}/{c.reps}: idle p99 {pct(idle[-1]['lat'], 99):.0f}us max {max(idle[-1]['lat']):.0f}us"
        for key, _ in variants:
            pin_server_threads(pid, server_cpus, server_cpus if key == "shared" else client_cpus)
            w = asyncio.run(ping_window(c, duration, n))
            loaded[key].append(w)
            msg += (f" | {key}: p99 {pct(w['lat'], 99):.0f}us max {max(w['lat']):.0f}us, "
                    f"{n} answered in {w['load']['all_answered_s']:.2f}s")
            info = c.qa_info()
            if int(info.get("qa_waiting_clients", 0)) or int(info.get("qa_flights", 0)):
                anomaly(f"after a responsiveness window: waiting_clients={info.get('qa_waiting_clients')} "
                        f"flights={info.get('qa_flights')}")
        log(msg)
    pin_server_threads(pid, server_cpus, server_cpus)
    # qa.max-inflight stays at 512: lowering it below the number of live worker threads strands
    # queued jobs (see check_lowered_inflight).
    return {"idle": idle, "loaded": loaded, "variants": variants, "n": n, "duration": duration,
            "realtime": c.realtime_pinger}


def md_resp(rs, reps):
    out = ["## 3. Responsiveness while misses wait\n"]
    rt = ("runs real-time (`chrt -f 10`) so that the load generator and the demo backend on its "
          "core cannot delay it, and " if rs["realtime"] else
          "could not run real-time here (`chrt` refused), so client-side scheduling delays are "
          "included, and ")
    out.append(
        f"One client sends a PING every {PING_INTERVAL_S * 1e6:.0f} µs (raw socket, its own process; it "
        f"{rt}sleeps between pings) for {rs['duration']:.0f} s. Idle: nothing else. Loaded: 0.2 s "
        f"into the window, {rs['n']} QA.GET misses with unique questions are sent on 500 pre-opened "
        "connections (redis-py asyncio) to a backend that answers after 2 s (`qa.max-inflight 512`, "
        "`qa.timeout-ms 20000`), so the window covers blocking 500 clients, the wait, storing 500 "
        "answers and unblocking. Two loaded variants: the module's worker threads on the server's "
        "core (the whole redis-server pinned, as everywhere else here), and moved to the client "
        "core (`sched_setaffinity` on every thread but the main one), which is closer to a server "
        "with spare cores. A warm-up loaded window (not counted) starts the 500 workers first; "
        f"then {reps} rounds of idle, loaded (shared core), loaded (workers apart). Per-window "
        "percentiles, then the median over windows; max is the largest over all windows.\n")
    out.append("| PING latency | pings per window | p50 µs | p99 µs | p99.9 µs | max µs | pings > 1 ms (per window, median) |")
    out.append("|---|---|---|---|---|---|---|")
    summary = {}
    rows = [("idle", rs["idle"])] + [(label, rs["loaded"][key]) for key, label in rs["variants"]]
    for name, ws in rows:
        p50 = med([pct(w["lat"], 50) for w in ws])
        p99 = med([pct(w["lat"], 99) for w in ws])
        p999 = med([pct(w["lat"], 99.9) for w in ws])
        mx = max(max(w["lat"]) for w in ws)
        slow = med([sum(1 for x in w["lat"] if x > 1000) for w in ws])
        cnt = med([len(w["lat"]) for w in ws])
        summary[name] = (p50, p99, p999, mx)
        out.append(f"| {name} | {cnt:,.0f} | {p50:.0f} | {p99:.0f} | {p999:.0f} | {mx:,.0f} | {slow:.0f} |")
    out.append("")
    # Where in the loaded window the slow pings were: while the misses arrive (workers start),
    # while they wait, and while the answers come back (stores + unblocking).
    phases = [("misses arriving (first 300 ms after sending)", lambda t, w: 0 <= t - w["load"]["start_ms"] < 300),
              ("waiting (300 ms to 1.9 s)", lambda t, w: 300 <= t - w["load"]["start_ms"] < 1900),
              ("answers returning (1.9 s until all answered + 100 ms)",
               lambda t, w: 1900 <= t - w["load"]["start_ms"] and t <= w["load"]["end_ms"] + 100)]
    out.append("Loaded windows split by phase (p99: median over windows; max: over all windows):\n")
    out.append("| workers | phase | pings (median per window) | p50 µs | p99 µs | max µs |")
    out.append("|---|---|---|---|---|---|")
    for key, label in rs["variants"]:
        for name, inside in phases:
            per = [[l for t, l in w["series"] if inside(t, w)] for w in rs["loaded"][key]]
            per = [x for x in per if x]
            if not per:
                continue
            out.append(f"| {key} | {name} | {med([len(x) for x in per]):,.0f} | {med([pct(x, 50) for x in per]):.0f} | "
                       f"{med([pct(x, 99) for x in per]):.0f} | {max(max(x) for x in per):,.0f} |")
    out.append("")
    out.append("Per loaded window: the slowest PING, when it happened, and the time until all 500 misses were answered:\n")
    out.append("| workers | window | PING p99 µs | PING max µs | max at (ms after the misses were sent) | all 500 answered after (s) | wrong replies |")
    out.append("|---|---|---|---|---|---|---|")
    for key, _ in rs["variants"]:
        for i, w in enumerate(rs["loaded"][key]):
            t_max, l_max = max(w["series"], key=lambda x: x[1])
            out.append(f"| {key} | {i + 1} | {pct(w['lat'], 99):.0f} | {l_max:,.0f} | "
                       f"{t_max - w['load']['start_ms']:.0f} | {w['load']['all_answered_s']:.2f} | "
                       f"{w['load']['wrong']} |")
    out.append("")
    rs["summary"] = summary
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# 4. stampede


async def stampede_once(c, n, q):
    clients = await open_clients(c.port, n)
    try:
        before = c.qa_info()
        t0 = time.perf_counter()
        results = await asyncio.wait_for(
            asyncio.gather(*(timed(cl, "QA.GET", CACHE, q) for cl in clients)), 60)
        t1 = time.perf_counter()
        after = c.qa_info()
    finally:
        await close_clients(clients)
    want = expected_answer(q)
    wrong = [describe(r) for r, _, _ in results if not isinstance(r, bytes) or r.decode() != want]
    sent_spread = max(s for _, _, s in results) - min(s for _, _, s in results)
    d = lambda f: int(after.get(f, 0)) - int(before.get(f, 0))
    return {"total_s": t1 - t0, "backend_calls": d("qa_backend_calls"), "misses": d("qa_misses"),
            "coalesced": d("qa_coalesced"), "hits": d("qa_hits"), "wrong": len(wrong),
            "wrong_example": wrong[0] if wrong else "", "sent_spread_s": sent_spread,
            "slowest_s": max(x for _, x, _ in results), "fastest_s": min(x for _, x, _ in results)}


async def app_stampede_once(c, n, q):
    clients = await open_clients(c.port, n)
    try:
        return await client_side.stampede_once(clients, c.a.backend_1000, q)
    finally:
        await close_clients(clients)


def bench_stampede(c):
    log("4. stampede")
    n = 1000
    c.r.config_set("qa.backend-url", c.backend_url(c.a.backend_1000))
    c.r.config_set("qa.max-inflight", 512)
    c.r.config_set("qa.timeout-ms", 20000)
    runs, app_runs = [], []
    for rep in range(c.reps):  # QA.GET, client-side, QA.GET, ...
        q = f"What happens in stampede {c.run_id} number {rep}?"
        r = asyncio.run(stampede_once(c, n, q))
        runs.append(r)
        a = asyncio.run(app_stampede_once(c, n, f"What happens in the client-side stampede {c.run_id} number {rep}?"))
        app_runs.append(a)
        log(f"   rep {rep + 1}/{c.reps}: QA.GET {r['backend_calls']} backend call(s), all {n} answered in "
            f"{r['total_s']:.2f}s, wrong {r['wrong']} | client-side {a['backend_calls']} backend calls, "
            f"{a['total_s']:.2f}s, wrong {a['wrong']}, errors {a['errors']}")
        if r["wrong"]:
            anomaly(f"stampede rep {rep + 1}: {r['wrong']}/{n} wrong replies, e.g. {r['wrong_example']}")
        if r["backend_calls"] != 1:
            anomaly(f"stampede rep {rep + 1}: {r['backend_calls']} backend calls for one question")
        if a["errors"]:
            anomaly(f"client-side stampede rep {rep + 1}: {a['errors']}/{n} clients failed, e.g. {a['error_example']}")
    return {"runs": runs, "app_runs": app_runs, "n": n}


def md_stampede(s, reps):
    out = ["## 4. Stampede\n"]
    out.append(
        f"{s['n']} connections (redis-py asyncio, opened and PINGed first) send the same new "
        "question at once (`asyncio.gather`) to a backend that answers after 1 s. Backend calls, "
        "misses, coalesced and hits are deltas of `INFO qa`; `qa.max-inflight 512` (left from section 3); the time runs from the first send to "
        f"the last reply. {reps} repetitions, a new question each.\n")
    out.append("| rep | backend calls | misses | coalesced | hits | wrong replies | sending took (s) | fastest reply (s) | all answered after (s) |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(s["runs"]):
        out.append(f"| {i + 1} | {r['backend_calls']} | {r['misses']} | {r['coalesced']} | {r['hits']} | "
                   f"{r['wrong']} | {r['sent_spread_s']:.3f} | {r['fastest_s']:.3f} | {r['total_s']:.3f} |")
    tot = med([r["total_s"] for r in s["runs"]])
    calls = med([r["backend_calls"] for r in s["runs"]])
    out.append(f"| **median** | **{calls:g}** | | | | | | | **{tot:.3f}** |")
    out.append("")
    app = s.get("app_runs") or []
    if app:
        out.append(
            "The client-side way, right after each QA.GET repetition (so alternating), with 1000 "
            "connections opened the same way and the same 1 s backend: every client sends `GET "
            "app:<md5(question.lower())>`, and on a miss POSTs the question to the backend itself "
            "(asyncio, a new connection each, `Connection: close`) and `SETEX`es the answer. "
            "Backend calls are the misses the clients saw, each followed by one POST.\n")
        out.append("| rep | backend calls | failed clients | wrong replies | fastest (s) | all answered after (s) |")
        out.append("|---|---|---|---|---|---|")
        for i, r in enumerate(app):
            out.append(f"| {i + 1} | {r['backend_calls']} | {r['errors']} | {r['wrong']} | "
                       f"{r['fastest_s']:.3f} | {r['total_s']:.3f} |")
        a_calls = med([r["backend_calls"] for r in app])
        a_tot = med([r["total_s"] for r in app])
        out.append(f"| **median** | **{a_calls:g}** | | | | **{a_tot:.3f}** |")
        out.append("")
        out.append(f"Side by side (medians): QA.GET {calls:g} backend call, all answered after {tot:.2f} s; "
                   f"the client-side way {a_calls:,.0f} backend calls, all answered after {a_tot:.2f} s "
                   "(the demo backend runs a thread per connection and sleeps 1 s in each, so 1000 "
                   "parallel calls take about as long as one plus the cost of 1000 connections; a real "
                   "backend bills each of them and may rate-limit them).\n")
    s["summary"] = (calls, tot, [r["backend_calls"] for r in s["runs"]],
                    med([r["backend_calls"] for r in app]) if app else None,
                    med([r["total_s"] for r in app]) if app else None)
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# post-run check


def check_lowered_inflight(c):
    """After section 3 the pool holds ~500 idle worker threads. Lowering qa.max-inflight below
    that must not stop new misses from being served. Run last: if the job is stranded it stays
    queued until idle threads retire (60 s)."""
    log("check: a miss after lowering qa.max-inflight below the live worker threads")
    threads = len(os.listdir(f"/proc/{c.a.redis_pid}/task"))
    c.r.config_set("qa.backend-url", c.backend_url(c.a.backend_1000))
    c.r.config_set("qa.max-inflight", 16)
    c.r.config_set("qa.timeout-ms", 4000)
    calls0 = int(c.qa_info()["qa_backend_calls"])
    q = f"after lowering max-inflight {c.run_id}?"
    t0 = time.perf_counter()
    try:
        reply = c.r.execute_command("QA.GET", CACHE, q).decode()
    except Exception as e:
        reply = f"error: {e}"
    dt = time.perf_counter() - t0
    info = c.qa_info()
    calls = int(info["qa_backend_calls"]) - calls0
    ok = reply == expected_answer(q)
    res = {"threads": threads, "reply": reply, "seconds": dt, "backend_calls": calls,
           "queued": int(info.get("qa_queued", 0)), "ok": ok}
    if not ok:
        why = ""
        if calls == 0 and res["queued"] >= 1:
            why = (": the job stays queued (src/pool.rs: the woken worker sees threads > max_threads and "
                   "exits without running it or waking another) until idle workers retire after 60 s. "
                   "Reproduce: qa.max-inflight 64, 40 concurrent misses, then qa.max-inflight 4 and "
                   "qa.timeout-ms 3000, then one new QA.GET")
        anomaly(
            f"after `CONFIG SET qa.max-inflight 16` with {threads} server threads alive (about 500 idle "
            f"qa-worker threads left by section 3), a new miss on a 1 s backend got `{reply}` after "
            f"{dt:.1f} s; the backend was called {calls} times and `qa_queued` is {res['queued']}{why}.")
    log(f"   {'ok' if ok else 'FAILED'}: {reply[:60]!r} after {dt:.2f}s, {calls} backend call(s)")
    return res


# ---------------------------------------------------------------------------------------------
# report


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:
        return "?"


def loadavg():
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


LOAD_AT_START = loadavg()


def machine_md():
    import redis
    cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-").strip()
    commit = sh(f"git -C {ROOT} rev-parse --short HEAD")
    dirty = sh(f"git -C {ROOT} status --porcelain -- src Cargo.toml Cargo.lock")
    rows = [
        ("nproc", os.environ.get("BENCH_NPROC") or sh("nproc --all")),
        ("CPU", cpu),
        ("memory", sh("free -h | awk '/Mem:/{print $2}'")),
        ("kernel", platform.release()),
        ("redis-server --version", sh("redis-server --version")),
        ("redis-benchmark", sh("redis-benchmark --version")),
        ("python3 / redis-py", f"{platform.python_version()} / {redis.__version__}"),
        ("rustc", sh("rustc --version")),
        ("module", os.environ.get("BENCH_MODULE_DESC")
         or (commit + (" (work tree, with uncommitted changes in src/)" if dirty else " (work tree)"))),
        ("load average (1/5/15 min) at start / end", f"{LOAD_AT_START} / {loadavg()}"),
        ("pinning", f"redis-server (and the module's threads) on core {os.environ.get('SERVER_CPU', '0')}; "
                    f"every client and the demo backends on core {os.environ.get('CLIENT_CPU', '1')} (`taskset -c`)"),
    ]
    plain = {"pinning", "module"}
    return "\n".join(["| | |", "|---|---|"] + [f"| {k} | {v if k in plain else f'`{v}`'} |" for k, v in rows])


def targets_md(results):
    """The issue's targets next to this run's figures, met or not, with the cause of a gap."""
    rows = []
    verdict = lambda ok: "met" if ok else "**not met**"
    api = ("what is left is the module API itself (command dispatch through the module, key "
           "open with its handle allocation, the reply: see the floor below) and the module's own "
           "work on a hit (the entry's header, the arguments, the remembered key); see the profile")
    if "hit" in results:
        qus, gus, uus = results["hit"]["us"]
        s = results["hit"]["summary"]
        rows.append(("hit throughput at pipeline 1 ≥ 0.97× GET", f"{s[1][0]:.2f}×",
                     verdict(s[1][0] >= 0.97), ""))
        rows.append(("hit throughput at pipeline 16 ≥ 0.80× GET", f"{s[16][0]:.2f}×",
                     verdict(s[16][0] >= 0.80), api))
        ratio = qus / gus if gus else float("nan")
        floor_txt = ""
        if results["hit"].get("floor_us"):
            fus, r_fg, r_qf, _ = results["hit"]["floor_us"]
            floor_txt = (f"; the module API's floor alone (FLOOR.GET: open the key, read it in place, "
                         f"reply 500 bytes) is {r_fg:.1f}× GET ({fus:.2f} µs), and a hit is {r_qf:.2f}× "
                         "that floor")
        rows.append(("server time per hit ≤ 2× GET's", f"{ratio:.1f}× ({qus:.2f} vs {gus:.2f} µs)",
                     verdict(ratio <= 2.0), "" if ratio <= 2.0 else api + floor_txt))
        aus, nus, tws, r_na, r_nt = results["hit"]["first_hits"]
        rows.append(("non-ASCII question ≤ 1.5× an ASCII question's server time (questions asked in turn, "
                     "so normalized and hashed)",
                     f"{r_na:.2f}× ({nus:.2f} vs {aus:.2f} µs); {r_nt:.2f}× its ASCII twin of the same "
                     f"length ({tws:.2f} µs)", verdict(r_na <= 1.5),
                     "" if r_na <= 1.5 else "the non-ASCII question is twice as long: more bytes to "
                     "hash and normalize; against an ASCII question of the same length the gap is the "
                     "twin ratio"))
    if "miss" in results:
        s = results["miss"]["summary"]
        rows.append(("miss overhead ≤ 1 ms", f"{s[2]:.2f} ms p50 / {s[3]:.2f} ms p99 over a direct POST",
                     verdict(s[3] <= 1.0), ""))
    if "resp" in results:
        s = results["resp"]["summary"]
        idle = s["idle"][1]
        for key, label in results["resp"]["variants"]:
            ratio = s[label][1] / idle if idle else float("nan")
            rows.append((f"PING p99 with 500 misses waiting ≤ 2× idle (workers {key})",
                         f"{ratio:.1f}× ({s[label][1]:.0f} vs {idle:.0f} µs)", verdict(ratio <= 2.0),
                         "" if ratio <= 2.0 else "the workers share the server's only core here: "
                         "their TLS/HTTP work takes turns with the main thread"))
    if "stampede" in results:
        all_calls = results["stampede"]["summary"][2]
        rows.append(("1000 identical misses → 1 backend call", f"{all_calls}",
                     verdict(all(c == 1 for c in all_calls)), ""))
    if "memory" in results:
        for size, limit, ratio in results["memory"]["targets"]:
            rows.append((f"memory per entry ≤ {limit:.2f}× SETEX ({size:,}-byte answer)", f"{ratio:.2f}×",
                         verdict(ratio <= limit),
                         "" if ratio <= limit else
                         "the header and question (~125 B) push the value into the next jemalloc size "
                         "class (640 B after 512 B); see 6"))
    if "scale" in results:
        rows_s = results["scale"]["summary"]["rows"]
        if len(rows_s) >= 2:
            f, l = rows_s[0], rows_s[-1]
            rel = (l["q16"] / f["q16"]) / (l["g16"] / f["g16"])
            hot = l["qhot"] / f["qhot"]
            rows.append((f"hit time flat from {f['size']:,} to {l['size']:,} entries (growth on random "
                         "entries over GET's on random keys; one hot entry)",
                         f"{rel:.2f}× ({l['q16'] / f['q16']:.2f}× vs GET {l['g16'] / f['g16']:.2f}×); hot "
                         f"{hot:.2f}×", verdict(rel <= 1.2),
                         "" if rel <= 1.2 else "QA.GET grows more than GET with the keyspace"))
    if not rows:
        return ""
    out = ["## Targets (issue #13)\n", "| target | this run | verdict | cause of a gap |",
           "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "--pinger":
        pinger(int(sys.argv[2]), float(sys.argv[3]))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--redis-port", type=int, required=True)
    ap.add_argument("--redis-pid", type=int, required=True)
    ap.add_argument("--backend-100", type=int, required=True)
    ap.add_argument("--backend-2000", type=int, required=True)
    ap.add_argument("--backend-1000", type=int, required=True)
    ap.add_argument("--backend-0", type=int, required=True)
    ap.add_argument("--module", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--redis-log", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help="comma-separated, any of: " + " ".join(SECTIONS))
    a = ap.parse_args()
    want = [x.strip() for x in a.sections.split(",") if x.strip()]
    unknown = [x for x in want if x not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {unknown}; known: {' '.join(SECTIONS)}")
    only = set(want)
    c = Ctx(a)
    started = time.time()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections = {}
    results = {}
    if "hit" in only:
        results["hit"] = bench_hit(c)
        sections["hit"] = md_hit(results["hit"], c.reps)
    if "miss" in only:
        results["miss"] = bench_miss(c)
        sections["miss"] = md_miss(results["miss"], c.reps)
    if "resp" in only:
        results["resp"] = bench_responsiveness(c)
        sections["resp"] = md_resp(results["resp"], c.reps)
    if "stampede" in only:
        results["stampede"] = bench_stampede(c)
        sections["stampede"] = md_stampede(results["stampede"], c.reps)
    if "client" in only:
        log("5. client-side way vs QA.GET, 10k questions")
        results["client"] = client_side.run_workload(c, a.backend_0, log, anomaly)
        results["client"]["resp3"] = b"resp=3" in c.r.execute_command("CLIENT", "INFO")
        sections["client"] = client_side.md_workload(results["client"])
    if "profile" in only:
        import profile_hit
        us = results["hit"]["us"] if "hit" in results else None
        prof = profile_hit.run(c, a, CACHE, HIT_QUESTION, us, log, anomaly,
                               question2=HIT_QUESTION_UNICODE if us else None,
                               us2=us[2] if us else None)
        sections["profile"] = prof["md"]
        results["profile"] = prof
    if "resp" in only:
        results["check"] = check_lowered_inflight(c)
    if "memory" in only:
        log("6. memory")
        results["memory"] = memory_scale.bench_memory(c, a, ANSWER_500, log, anomaly)
        sections["memory"] = memory_scale.md_memory(results["memory"])
    if "scale" in only:
        log("7. scale")
        sizes = tuple(int(x) for x in os.environ.get("SCALE_SIZES", "10000,100000,1000000").split(","))
        results["scale"] = memory_scale.bench_scale(c, a, redis_benchmark, log, anomaly,
                                                    sizes=sizes, reps=min(c.reps, 3))
        sections["scale"] = memory_scale.md_scale(results["scale"])
    charts_made = None
    if "charts" in only:
        import charts
        charts_made = charts.draw(results, os.path.dirname(os.path.abspath(a.out)), log)
        for key, (name, alt) in (charts_made or {}).items():
            sections[key] += f"\n![{alt}]({name})\n"
    if not c.alive():
        anomaly("redis-server stopped answering during the run")
    elapsed = time.time() - started

    doc = [f"# redis-qa benchmarks\n"]
    doc.append(f"Generated by `bench/run.sh` (`make bench`) on {date}; measuring took {elapsed:.0f} s. "
               "Every number below comes from that one run: the compared commands ran side by side, "
               "alternating, on the same pinned cores (this 2-core machine is shared and noisy, "
               "throughput varies about ±20% between runs, so read ratios and server µs/call rather "
               "than absolute req/s; see [How noisy this machine is](#how-noisy-this-machine-is)).\n")
    rev = f"BENCH_REV={os.environ['BENCH_REV']} " if os.environ.get("BENCH_REV") else ""
    doc.append("Command: `bench/run.sh` (environment: "
               f"`{rev}SERVER_CPU={os.environ.get('SERVER_CPU', '0')} CLIENT_CPU={os.environ.get('CLIENT_CPU', '1')} "
               f"REPS={c.reps} PROFILER={os.environ.get('PROFILER', 'auto')}"
               + ("" if want == SECTIONS else f" SECTIONS={','.join(want)}") + "`)\n")
    doc.append("Each section can be re-run alone, e.g. `bench/run.sh memory scale` (or "
               "`SECTIONS=memory,scale bench/run.sh`), which writes `bench/out/benchmarks.md` and its "
               "charts and leaves this page alone. Sections: `hit` (1), `miss` (2), `resp` (3), "
               "`stampede` (4), `client` (5), `memory` (6), `scale` (7), `profile` (where a hit's time "
               "goes); the PNG charts are drawn for whichever ran (`CHARTS=0`: none). See "
               "[bench/README.md](../bench/README.md).\n")
    doc.append("## Machine\n")
    doc.append(machine_md() + "\n")
    doc.append(NOISE_MD)
    try:
        busiest = max(float(LOAD_AT_START.split()[0]), float(loadavg().split()[0]))
    except ValueError:
        busiest = 0.0
    if busiest > 1.5:
        doc.append(f"Other work was running on this shared machine (1-minute load average up to "
                   f"{busiest:.1f} on 2 cores): ratios and server µs/call hold up, latency tails "
                   "(p99, max) are inflated by it.\n")
    doc.append("## Summary\n")
    summ = []
    if "hit" in results:
        qus, gus, uus = results["hit"]["us"]
        s = results["hit"]["summary"]
        summ.append(f"- Hit: {qus:.2f} µs of server time per QA.GET hit vs {gus:.2f} µs per GET "
                    f"(500-byte value); throughput QA.GET/GET {s[1][0]:.2f}× at pipeline 1, "
                    f"{s[16][0]:.2f}× at pipeline 16. A non-ASCII question costs {uus:.2f} µs.")
    if "miss" in results:
        s = results["miss"]["summary"]
        summ.append(f"- Miss: QA.GET miss − 100 ms backend delay = {s[0]:.2f} ms p50 / {s[1]:.2f} ms p99; "
                    f"minus a direct POST to the same backend = {s[2]:.2f} ms p50 / {s[3]:.2f} ms p99.")
    if "resp" in results:
        s = results["resp"]["summary"]
        i = s["idle"]
        parts = [f"{s[label][1]:.0f} µs with 500 misses waiting, workers {key} (max {s[label][3]:,.0f} µs)"
                 for key, label in results["resp"]["variants"]]
        summ.append(f"- Responsiveness: PING p99 {i[1]:.0f} µs idle (max {i[3]:,.0f} µs) vs "
                    + "; ".join(parts) + ".")
    if "stampede" in results:
        calls, tot, all_calls, a_calls, a_tot = results["stampede"]["summary"]
        summ.append(f"- Stampede: 1000 identical concurrent misses → backend calls per repetition "
                    f"{all_calls}; all answered after {tot:.2f} s (median) on a 1 s backend"
                    + (f"; the client-side way (GET, miss, call, SETEX in each client): {a_calls:,.0f} "
                       f"backend calls, all answered after {a_tot:.2f} s." if a_calls is not None else "."))
    if "client" in results:
        x = results["client"]["summary"]
        summ.append(f"- Against the client-side way (10k questions, 30% repeats incl. case/spacing/"
                    f"punctuation variants, redis-py): QA.GET hit rate {100 * x['qa_hit_rate']:.1f}% vs "
                    f"{100 * x['app_hit_rate']:.1f}% for md5(question.lower()) + GET, backend calls "
                    f"{x['qa_calls']:,} vs {x['app_calls']:,}; hit latency p50 {x['qa_p50']:.0f} vs "
                    f"{x['app_p50']:.0f} µs, p99 {x['qa_p99']:.0f} vs {x['app_p99']:.0f} µs.")
    if "memory" in results:
        summ.append("- Memory: " + "; ".join(
            f"{e:,.0f} B per entry vs {p:,.0f} B per SETEX of the same {size:,}-byte answer: {ratio:.2f}× "
            f"(MEMORY USAGE {ratio_mu:.2f}×)" for size, ratio, ratio_mu, e, p in results["memory"]["summary"])
            + " (used_memory over 100k).")
    if "scale" in results:
        x = results["scale"]["summary"]
        rows = x["rows"]
        summ.append(f"- Scale: QA.GET server time per hit on random entries "
                    + " / ".join(f"{r['q16']:.2f}" for r in rows) + " µs at "
                    + " / ".join(f"{r['size']:,}" for r in rows) + " entries (GET of random plain keys "
                    + " / ".join(f"{r['g16']:.2f}" for r in rows) + f" µs); SAVE of {rows[-1]['size']:,} "
                    f"entries {x['save_s']:.1f} s ({x['rdb_mib']:,.0f} MiB), restart until PING answers "
                    f"{x['load_s']:.1f} s with the module, {x['load_s_without']:.1f} s without.")
    if "profile" in results and results["profile"].get("summary"):
        summ.append("- " + results["profile"]["summary"])
    doc.append("\n".join(summ) + "\n")
    doc.append(targets_md(results))
    if "charts" in only and charts_made is None:
        doc.append("No charts: matplotlib could not be imported (bench/run.sh installs it from PyPI "
                   "when it can).\n")
    for k in ("hit", "miss", "resp", "stampede", "client", "memory", "scale", "profile"):
        if k in sections:
            doc.append(sections[k] + "\n")
    doc.append("## Problems seen during the run\n")
    if ANOMALIES:
        doc.append("\n".join(f"- {x}" for x in ANOMALIES) + "\n")
    else:
        doc.append("None: every reply checked (hits: the exact 500-byte answer; misses: the backend's "
                   "answer for that question; counters: one backend call per distinct question), and "
                   "the server answered PING at the end.\n")
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        f.write("\n".join(doc))
    log(f"report written to {a.out} ({elapsed:.0f}s)")


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    main()
