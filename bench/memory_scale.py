"""Memory per entry and behaviour at scale (issue #8, items 6 and 7), each on a redis-server of
its own (started here, on the server core, with the module and no backend: a lookup that misses
fails at once instead of calling anything), so the main server's state and used_memory are left
alone. Entries are written with QA.SET pipelined from redis-py, never by misses.

- memory: 100k entries with a 500-byte answer vs a plain SETEX of the same answer under an
  md5-hex key: used_memory delta per entry and MEMORY USAGE, plus a breakdown of the difference.
- scale: QA.GET hits on random entries among 10k, 100k and 1M (redis-benchmark `-r`, next to GET
  of random plain keys among as many in another database), then SAVE and restart times of the
  1M-entry RDB, with and without the module loaded.
"""

import hashlib
import os
import re
import socket
import statistics
import subprocess
import time

TTL = 86400
MODEL = "gpt-4o-mini"


def med(values):
    return statistics.median(values) if values else float("nan")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class OwnServer:
    """A redis-server started and stopped here; its pid goes to extra.pids so that run.sh stops
    it too if this process dies first."""

    def __init__(self, a, name, module=True, args=()):
        self.a = a
        self.dir = os.path.join(a.work, name)
        os.makedirs(self.dir, exist_ok=True)
        self.log = os.path.join(self.dir, "redis.log")
        self.args = list(args)
        self.module = module
        self.port = free_port()
        self.proc = None
        self.r = None

    def start(self, deadline_s=300):
        """Starts the server; returns the seconds until it answered PING (after loading its RDB)."""
        import redis

        argv = ["taskset", "-c", os.environ.get("SERVER_CPU", "0"), "redis-server",
                "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", self.dir, "--dbfilename", "dump.rdb", "--logfile", self.log] + self.args
        if self.module:
            argv += ["--loadmodule", self.a.module]
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(os.path.join(self.a.work, "extra.pids"), "a") as f:
            f.write(f"{self.proc.pid}\n")
        self.r = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=600)
        while True:
            try:
                if self.r.ping():
                    break
            except (redis.exceptions.BusyLoadingError, redis.exceptions.ConnectionError):
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited ({self.proc.returncode}): {self.log_tail()}")
            if time.perf_counter() - t0 > deadline_s:
                raise RuntimeError(f"redis-server did not answer within {deadline_s} s")
            time.sleep(0.005)
        return time.perf_counter() - t0

    def log_tail(self, n=20):
        try:
            with open(self.log) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def stop(self):
        if self.proc is None:
            return
        try:
            self.r.shutdown(nosave=True)
        except Exception:
            pass  # the connection closes as the server exits
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def _check_ok(replies, what, anomaly):
    bad = [x for x in replies if x not in (b"OK", "OK", True)]
    if bad:
        anomaly(f"{what}: {len(bad)} replies were not OK, e.g. {bad[0]!r}")


def fill_qa(r, cache, questions, answer, anomaly, batch=1000, extra=()):
    """QA.SET for each question, pipelined (no MULTI) in batches."""
    t0 = time.perf_counter()
    p = r.pipeline(transaction=False)
    for i, q in enumerate(questions):
        p.execute_command("QA.SET", cache, q, answer, "TTL", TTL, *extra)
        if (i + 1) % batch == 0:
            _check_ok(p.execute(), "QA.SET", anomaly)
    _check_ok(p.execute(), "QA.SET", anomaly)
    return time.perf_counter() - t0


def fill_plain(r, keys, value, anomaly, batch=1000):
    t0 = time.perf_counter()
    p = r.pipeline(transaction=False)
    for i, k in enumerate(keys):
        p.setex(k, TTL, value)
        if (i + 1) % batch == 0:
            _check_ok(p.execute(), "SETEX", anomaly)
    _check_ok(p.execute(), "SETEX", anomaly)
    return time.perf_counter() - t0


def used_memory(r):
    return int(r.info("memory")["used_memory"])


def memory_usage(r, key):
    return int(r.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0"))


def md5_key(question):
    return hashlib.md5(question.lower().encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# memory


def bench_memory(c, a, answer, log, anomaly, n=100000, sample=300):
    """Per answer size (the 500-byte answer, and 2 KB): n entries vs n SETEX, each fill alone."""
    log(f"memory: {n:,} entries vs {n:,} SETEX per answer size, own redis-server")
    srv = OwnServer(a, "memory")
    srv.start()
    r = srv.r
    answers = [answer, (answer * (2048 // len(answer) + 1))[:2048]]
    try:
        questions = [f"How do I configure feature number {i} in the settings page?" for i in range(n)]
        cache = "mem"
        # Module state that a first write creates (the cache's stats slot, its generation
        # mirror) is made before any baseline.
        fill_qa(r, cache + "w", ["warm-up?"], answer, anomaly)
        r.set("warm-up", "x")

        def measure(label, size, fill, keys_of):
            r.execute_command("FLUSHALL", "SYNC")
            m0 = used_memory(r)
            secs = fill()
            m1 = used_memory(r)
            keys = keys_of()
            mu = [memory_usage(r, k) for k in keys]
            enc = r.object("encoding", keys[0])
            enc = enc.decode() if isinstance(enc, bytes) else str(enc)
            res = {"label": label, "size": size, "per_entry": (m1 - m0) / n, "delta": m1 - m0,
                   "memory_usage": med(mu), "fill_s": secs, "dbsize": r.dbsize(),
                   "encoding": enc, "key_len": len(keys[0]), "value_len": r.strlen(keys[0])}
            log(f"   {label}: {res['per_entry']:.0f} B/entry (used_memory), MEMORY USAGE "
                f"{res['memory_usage']:.0f} B, encoding {enc}, filled in {secs:.1f}s")
            if res["dbsize"] != n:
                anomaly(f"memory, {label}: DBSIZE {res['dbsize']} after writing {n}")
            return res

        def qa_keys():
            ks = []
            for i in range(0, n, n // sample):
                k = r.execute_command("QA.KEY", cache, questions[i])
                k = k[b"key"] if isinstance(k, dict) else k[3]
                ks.append(k)
            return ks

        plain_keys = [md5_key(q) for q in questions]
        rows = []
        for ans in answers:
            rows.append(measure(f"SETEX, md5-hex key, {len(ans):,}-byte value", len(ans),
                                lambda: fill_plain(r, plain_keys, ans, anomaly),
                                lambda: plain_keys[::n // sample]))
            rows.append(measure(f"QA.SET entry, {len(ans):,}-byte answer", len(ans),
                                lambda: fill_qa(r, cache, questions, ans, anomaly), qa_keys))
        # Where the difference goes: MEMORY USAGE of single keys, from the plain string to the
        # whole entry (same key lengths as the real ones).
        r.execute_command("FLUSHALL", "SYNC")
        fill_qa(r, cache, questions[:sample], answer, anomaly)
        ks = [r.execute_command("QA.KEY", cache, q) for q in questions[:sample]]
        ks = [k[b"key"] if isinstance(k, dict) else k[3] for k in ks]
        steps = {"string, md5-hex key (32 bytes)": [], f"string, entry-length key ({len(ks[0])} bytes)": [],
                 "the whole entry (QA.SET)": []}
        for q, k in zip(questions[:sample], ks):
            alt = k[:-1] + (b"x" if k[-1:] != b"x" else b"y")
            r.setex(md5_key(q), TTL, answer)
            steps["string, md5-hex key (32 bytes)"].append(memory_usage(r, md5_key(q)))
            r.setex(alt, TTL, answer)
            steps[f"string, entry-length key ({len(ks[0])} bytes)"].append(memory_usage(r, alt))
            r.delete(alt)
            steps["the whole entry (QA.SET)"].append(memory_usage(r, k))
        sample_value = r.get(ks[0])
        header = sample_value.split(b"\n", 1)[0]
        return {"n": n, "rows": rows, "steps": {k: med(v) for k, v in steps.items()},
                "answer_len": len(answer), "question_len": len(questions[0]),
                "header": header.decode(), "value_len": len(sample_value)}
    finally:
        srv.stop()


def md_memory(m):
    rows = m["rows"]
    pairs = [(rows[i], rows[i + 1]) for i in range(0, len(rows), 2)]
    limits = {500: 1.15, 2048: 1.10}
    out = ["## 6. Memory per entry\n"]
    out.append(
        f"A redis-server of its own (same module, no backend), emptied (`FLUSHALL SYNC`) before each "
        f"fill: {m['n']:,} entries written with `QA.SET mem <question> <answer> TTL {TTL}` (redis-py "
        f"pipeline, 1000 per batch, no MULTI) vs {m['n']:,} `SETEX <md5-hex of the lowercased question> "
        f"{TTL} <answer>`, the same answer, for a {pairs[0][0]['size']}-byte and a "
        f"{pairs[-1][0]['size']:,}-byte answer; questions of {m['question_len']} "
        "bytes. Per entry: the growth of `INFO memory` `used_memory` over the fill divided by the "
        "number of keys (includes the keyspace and expires tables), and the median `MEMORY USAGE "
        "<key> SAMPLES 0` of 300 keys (the value and its key name; not the expires entry).\n")
    out.append("| stored as | encoding | key bytes | value bytes | used_memory per entry (B) | MEMORY USAGE (B) | vs SETEX (used_memory) | filled in (s) |")
    out.append("|---|---|---|---|---|---|---|---|")
    for plain, entry in pairs:
        for row in (plain, entry):
            out.append(f"| {row['label']} | {row['encoding']} | {row['key_len']} | {row['value_len']:,} | "
                       f"{row['per_entry']:,.0f} | {row['memory_usage']:,.0f} | "
                       f"{row['per_entry'] / plain['per_entry']:.2f}× | {row['fill_s']:.1f} |")
    out.append("")
    targets, summary = [], []
    for plain, entry in pairs:
        ratio = entry["per_entry"] / plain["per_entry"]
        ratio_mu = entry["memory_usage"] / plain["memory_usage"]
        limit = limits.get(plain["size"], 1.15)
        targets.append((plain["size"], limit, ratio))
        summary.append((plain["size"], ratio, ratio_mu, entry["per_entry"], plain["per_entry"]))
        out.append(f"**{plain['size']:,}-byte answer, target ≤ {limit:.2f}× SETEX: "
                   f"{'met' if ratio <= limit else 'not met'}** ({ratio:.2f}× by used_memory, "
                   f"{ratio_mu:.2f}× by MEMORY USAGE).\n")
    out.append("Where the difference goes (median MEMORY USAGE of 300 single keys, 500-byte answer):\n")
    out.append("| key | MEMORY USAGE (B) | step |")
    out.append("|---|---|---|")
    prev = None
    for name, v in m["steps"].items():
        out.append(f"| {name} | {v:,.0f} | {'' if prev is None else f'{v - prev:+,.0f}'} |")
        prev = v
    out.append("")
    out.append(
        f"An entry is one string (format v2, docs/entry-format.md): a header line such as `{m['header']}`, "
        f"the question, the answer; {m['value_len']} bytes for the {m['answer_len']}-byte answer. Its key "
        "(`qa:{<cache>}:` + 32 hex digits) takes the same allocation as a 32-character md5 key. The rest is "
        "the header and the question, and what they cost depends on jemalloc's size classes, four per "
        "doubling (…, 512, 640, 768, …, 2048, 2560, …): a 500-byte string takes 512 bytes, and "
        "any header moves it to 640 (+128 B, 19% of a SETEX's 661 B); a 2,048-byte value already takes "
        "2,560, and the header fits in the room left. Over answers of every length the average cost is "
        "the header's own size plus about 10% of rounding.\n")
    m["summary"] = summary
    m["targets"] = targets
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# scale


def _resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for x in args:
        x = x if isinstance(x, bytes) else str(x).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(x), x))
    return b"".join(out)


def mass_insert(port, commands, anomaly, what, batch=5000):
    """Sends RESP commands in batches on a raw socket and checks that every reply is +OK (the
    redis-cli --pipe way: redis-py's pipeline spends ~30 µs per command in Python here, which
    would make a 1M-entry fill take minutes)."""
    t0 = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port), timeout=600)
    bad = 0
    try:
        chunk = []
        for cmd in commands:
            chunk.append(cmd)
            if len(chunk) == batch:
                bad += _send_batch(s, chunk)
                chunk = []
        if chunk:
            bad += _send_batch(s, chunk)
    finally:
        s.close()
    if bad:
        anomaly(f"{what}: {bad} replies were not +OK")
    return time.perf_counter() - t0


def _send_batch(s, chunk):
    s.sendall(b"".join(chunk))
    want = len(chunk)
    buf = bytearray()
    while buf.count(b"\r\n") < want:
        data = s.recv(1 << 20)
        if not data:
            raise RuntimeError("connection closed during a mass insert")
        buf += data
    return want - buf.count(b"+OK\r\n")


def scale_answers(n=64, length=500, seed=7):
    """Answers that compress like text (random words), so that the RDB's LZF compression does not
    shrink them to nothing the way it does a repeated sentence."""
    import random
    rng = random.Random(seed)
    words = ["refund", "order", "account", "within", "days", "receipt", "support", "team", "please",
             "contact", "settings", "billing", "invoice", "shipping", "address", "password", "reset",
             "email", "link", "page", "click", "select", "option", "plan", "upgrade", "cancel", "any",
             "time", "your", "the", "a", "to", "of", "and", "in", "is", "you", "can", "for", "on",
             "with", "we", "will", "be", "after", "before", "first", "then", "menu", "profile"]
    out = []
    for _ in range(n):
        text = ""
        while len(text) < length:
            text += rng.choice(words) + rng.choice([" ", " ", " ", ", ", ". "])
        out.append(text[:length])
    return out


def _fill_range(port, lo, hi, answers, anomaly):
    t_qa = mass_insert(port, (_resp("QA.SET", "scale", f"scale question {i:012d}?", answers[i % len(answers)],
                                    "TTL", TTL) for i in range(lo, hi)), anomaly, "QA.SET")
    # The plain keys live in database 1 (SELECT first, on the same raw connection).
    t_plain = mass_insert(port, [_resp("SELECT", 1)] + [
        _resp("SETEX", f"plain:{i:012d}", TTL, answers[i % len(answers)]) for i in range(lo, hi)],
        anomaly, "SETEX")
    return t_qa, t_plain


def _load_seconds_from_log(path):
    try:
        with open(path) as f:
            found = re.findall(r"DB loaded from disk: ([\d.]+) seconds", f.read())
        return float(found[-1]) if found else float("nan")
    except OSError:
        return float("nan")


def bench_scale(c, a, redis_benchmark, log, anomaly, sizes=(10_000, 100_000, 1_000_000), reps=3):
    import redis

    log(f"scale: {', '.join(f'{s:,}' for s in sizes)} entries, own redis-server")
    srv = OwnServer(a, "scale")
    srv.start()
    r = srv.r
    r1 = redis.Redis(host="127.0.0.1", port=srv.port, db=1, socket_timeout=600)
    qa_cmd = ["QA.GET", "scale", "scale question __rand_int__?"]
    get_cmd = ["--dbnum", "1", "GET", "plain:__rand_int__"]
    points = []
    answers = scale_answers()
    try:
        have = 0
        for size in sizes:
            t_qa, t_plain = _fill_range(srv.port, have, size, answers, anomaly)
            have = size
            log(f"   {size:,}: filled (+{t_qa:.1f}s QA.SET, +{t_plain:.1f}s SETEX), used_memory "
                f"{used_memory(r) / 2**20:,.0f} MiB")
            for i in (0, size // 2, size - 1):
                got = r.execute_command("QA.PEEK", "scale", f"scale question {i:012d}?")
                if got != answers[i % len(answers)].encode():
                    anomaly(f"scale {size}: QA.PEEK of entry {i} returned {str(got)[:60]}")
            pt = {"size": size, "fill_qa_s": t_qa, "fill_plain_s": t_plain,
                  "used_memory": used_memory(r), "runs": {}}
            for rep in range(reps):
                for p, n in ((1, 40000), (16, 160000)):
                    for name, cmd, stat in (("GET", get_cmd, "cmdstat_get"),
                                            ("QA.GET", qa_cmd, "cmdstat_qa.get")):
                        r.config_resetstat()
                        m = redis_benchmark(srv.port, p, ["-r", str(size)] + cmd, n=n)
                        cs = r.info("commandstats").get(stat, {})
                        m["usec_per_call"] = float(cs.get("usec_per_call", "nan"))
                        failed = int(cs.get("failed_calls", 0)) + int(cs.get("rejected_calls", 0))
                        if int(cs.get("calls", 0)) != n or failed:
                            anomaly(f"scale {size} {name} P{p}: {cs.get('calls')} calls, {failed} failed (expected {n}, 0)")
                        pt["runs"].setdefault((name, p), []).append(m)
                # One hot entry / key at the same size: the lookup itself, without cache misses.
                for name, cmd, stat in (("GET hot", ["--dbnum", "1", "GET", "plain:000000000000"], "cmdstat_get"),
                                        ("QA.GET hot", ["QA.GET", "scale", "scale question 000000000000?"],
                                         "cmdstat_qa.get")):
                    r.config_resetstat()
                    m = redis_benchmark(srv.port, 16, cmd, n=160000)
                    cs = r.info("commandstats").get(stat, {})
                    m["usec_per_call"] = float(cs.get("usec_per_call", "nan"))
                    if int(cs.get("failed_calls", 0)):
                        anomaly(f"scale {size} {name}: {cs.get('failed_calls')} failed calls")
                    pt["runs"].setdefault((name, 16), []).append(m)
                for name, cmd in (("GET", get_cmd), ("QA.GET", qa_cmd)):
                    m = redis_benchmark(srv.port, 1, ["-r", str(size)] + cmd, n=10000, clients=1)
                    pt["runs"].setdefault((name, "c1"), []).append(m)
            q16 = med([m["usec_per_call"] for m in pt["runs"][("QA.GET", 16)]])
            g16 = med([m["usec_per_call"] for m in pt["runs"][("GET", 16)]])
            c1 = med([m["p50_ms"] for m in pt["runs"][("QA.GET", "c1")]]) * 1e3
            log(f"   {size:,}: QA.GET {q16:.2f} us/call (GET {g16:.2f}), single-client p50 {c1:.0f} us")
            points.append(pt)

        # Persistence of the largest size: the plain keys go first, so the RDB holds the entries only.
        r1.execute_command("FLUSHDB", "SYNC")
        n_keys = r.dbsize()
        mem = used_memory(r)
        t0 = time.perf_counter()
        r.save()
        save_s = time.perf_counter() - t0
        rdb = os.path.join(srv.dir, "dump.rdb")
        rdb_bytes = os.path.getsize(rdb)
        log(f"   SAVE of {n_keys:,} keys: {save_s:.2f}s, {rdb_bytes / 2**20:,.0f} MiB")
        loads = []
        for module in (True, False):
            srv.stop()
            srv.module = module
            secs = srv.start()
            loaded = srv.r.dbsize()
            per_log = _load_seconds_from_log(srv.log)
            if loaded != n_keys:
                anomaly(f"scale: restarted {'with' if module else 'without'} the module, DBSIZE {loaded}, expected {n_keys}")
            if module:
                i = sizes[-1] // 3
                got = srv.r.execute_command("QA.GET", "scale", f"scale question {i:012d}?")
                if got != answers[i % len(answers)].encode():
                    anomaly(f"scale: after the restart, QA.GET of a saved entry returned {str(got)[:60]}")
            loads.append({"module": module, "ready_s": secs, "log_s": per_log})
            log(f"   restart {'with' if module else 'without'} the module: answering PING after "
                f"{secs:.2f}s (log: DB loaded in {per_log:.2f}s)")
        return {"points": points, "reps": reps, "save_s": save_s, "rdb_bytes": rdb_bytes,
                "n_keys": n_keys, "used_memory": mem, "loads": loads, "answer_len": len(answers[0])}
    finally:
        srv.stop()


def md_scale(s):
    out = ["## 7. Scale\n"]
    pts = s["points"]
    out.append(
        "A redis-server of its own (same module, no backend), filled step by step to "
        + ", ".join(f"{p['size']:,}" for p in pts)
        + f" entries with `QA.SET scale \"scale question <12 digits>?\" <{s['answer_len']}-byte answer> TTL {TTL}` "
        "(one of 64 answers of random words, so that they compress in the RDB like text; sent as raw "
        "RESP in batches of 5000, the `redis-cli --pipe` way, each reply checked to be +OK), and as "
        "many plain strings (`SETEX plain:<12 digits>`, same values) in database 1. At each size: `redis-benchmark -r <size>` so that every request reads a random "
        "entry (`QA.GET scale \"scale question __rand_int__?\"`) or a random plain key (`--dbnum 1 GET "
        "plain:__rand_int__`), 50 clients at pipeline 1 (40,000 requests) and 16 (160,000), GET and "
        f"QA.GET alternating, {s['reps']} repetitions (medians), server µs/call from `INFO commandstats`; "
        "then one client (`-c 1`, 10,000 requests) for the single-client p50, and, for the lookup "
        "without cache misses, one hot entry and one hot key read over and over (P16, no `-r`). Every request is a hit "
        "(a miss would fail: no backend URL is set; failed calls are checked to be 0).\n")
    out.append("| entries | used_memory | QA.GET µs/call (P16) | GET µs/call (P16) | one hot entry: QA.GET / GET µs/call (P16) | QA.GET req/s P1 | GET req/s P1 | QA.GET req/s P16 | GET req/s P16 | QA.GET p50 µs, 1 client | GET p50 µs, 1 client |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for p in pts:
        R = p["runs"]
        q16 = med([m["usec_per_call"] for m in R[("QA.GET", 16)]])
        g16 = med([m["usec_per_call"] for m in R[("GET", 16)]])
        row = {"size": p["size"], "q16": q16, "g16": g16,
               "q1rps": med([m["rps"] for m in R[("QA.GET", 1)]]),
               "g1rps": med([m["rps"] for m in R[("GET", 1)]]),
               "q16rps": med([m["rps"] for m in R[("QA.GET", 16)]]),
               "g16rps": med([m["rps"] for m in R[("GET", 16)]]),
               "qc1": med([m["p50_ms"] for m in R[("QA.GET", "c1")]]) * 1e3,
               "gc1": med([m["p50_ms"] for m in R[("GET", "c1")]]) * 1e3,
               "qhot": med([m["usec_per_call"] for m in R[("QA.GET hot", 16)]]),
               "ghot": med([m["usec_per_call"] for m in R[("GET hot", 16)]])}
        rows.append(row)
        out.append(f"| {p['size']:,} | {p['used_memory'] / 2**20:,.0f} MiB | {q16:.2f} | {g16:.2f} | "
                   f"{row['qhot']:.2f} / {row['ghot']:.2f} | "
                   f"{row['q1rps']:,.0f} | {row['g1rps']:,.0f} | {row['q16rps']:,.0f} | {row['g16rps']:,.0f} | "
                   f"{row['qc1']:.0f} | {row['gc1']:.0f} |")
    out.append("")
    first, last = rows[0], rows[-1]
    rq = [r["q16"] / first["q16"] for r in rows]
    rg = last["g16"] / first["g16"]
    if all(0.75 <= x <= 1.33 for x in rq):
        verdict = ("Flat: the changes are within this machine's run-to-run noise (about ±20%, more "
                   "while other work runs).")
    elif rq[-1] > 1.33 and rg > 1.33 and rq[-1] <= rg * 1.2:
        verdict = "Both grow, GET as much: memory access, not the module."
    else:
        verdict = "Not flat beyond the noise, and not the way GET grows: a gap to look into."
    out.append(
        f"From {first['size']:,} to {last['size']:,} entries, QA.GET server time per hit on a random "
        f"entry goes {first['q16']:.2f} → {last['q16']:.2f} µs ({last['q16'] / first['q16']:.2f}×), GET of a "
        f"random plain key {first['g16']:.2f} → {last['g16']:.2f} µs ({rg:.2f}×), and a hit on one hot "
        f"entry {first['qhot']:.2f} → {last['qhot']:.2f} µs ({last['qhot'] / first['qhot']:.2f}×). "
        f"**{verdict}** The lookup itself is a hash-table find, whatever the number of entries; what "
        "can grow is memory access, as a larger keyspace fits the CPU caches less, and GET pays that "
        f"too. Random access costs both commands several times their hot figure even at "
        f"{first['size']:,} entries (QA.GET {first['q16'] / first['qhot']:.1f}×, GET "
        f"{first['g16'] / first['ghot']:.1f}×): a random entry is a cache miss for the key, for the "
        "value, as for a GET (an entry is one string, like the plain key). "
        "The single-client p50 is the round trip, about the same for both at every size.\n")
    loads = s["loads"]
    with_m = [x for x in loads if x["module"]]
    without = [x for x in loads if not x["module"]]
    out.append(
        f"Persistence of {s['n_keys']:,} entries (the plain keys deleted first; used_memory "
        f"{s['used_memory'] / 2**20:,.0f} MiB): `SAVE` took **{s['save_s']:.2f} s** for an RDB file of "
        f"{s['rdb_bytes'] / 2**20:,.0f} MiB. Restarts on that file (the server stopped with `SHUTDOWN "
        "NOSAVE`, started again with the same `--dir`; time from starting the process until `PING` "
        "answers, i.e. loading finished, and the `DB loaded from disk` figure of its log):\n")
    out.append("| restart | until PING answers (s) | DB loaded from disk, per the log (s) |")
    out.append("|---|---|---|")
    for i, x in enumerate(loads):
        out.append(f"| {i + 1}: {'with the module' if x['module'] else 'without the module'} | "
                   f"{x['ready_s']:.2f} | {x['log_s']:.2f} |")
    out.append("")
    out.append("Entries are plain strings, so the module adds nothing to the RDB and the file loads "
               "without it too; after the restarts with the module a saved entry is served as a hit "
               "(checked).\n")
    s["summary"] = {"rows": rows, "save_s": s["save_s"], "rdb_mib": s["rdb_bytes"] / 2**20,
                    "load_s": med([x["ready_s"] for x in with_m]),
                    "load_s_without": med([x["ready_s"] for x in without])}
    return "\n".join(out)
