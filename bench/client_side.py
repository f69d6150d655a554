"""The client-side way, measured against QA.GET (issue #8, items 2 and 5).

What an application does without the module: `key = md5(question.lower())`, `GET key`, and on a
miss call the backend itself and `SETEX key ttl answer`. Two measurements:

- `run_workload`: the same 10k questions (30% repeats: exact ones and realistic variants of
  earlier questions: case, spacing, trailing punctuation) asked both ways, alternating question by
  question, on one redis-py connection, with a backend answering at once. Hit latency, backend
  calls and hit rate for each way.
- `stampede_once`: 1000 concurrent clients ask the same new question the client-side way (each
  GETs, misses, calls the backend, SETEXes); used next to the QA.GET stampede in bench.py.
"""

import asyncio
import hashlib
import http.client
import json
import random
import time

MODEL = "gpt-4o-mini"
APP_TTL = 3600

OPENERS = ["How do I", "Can I", "Where can I", "Is it possible to", "What is the fastest way to",
           "Why can't I", "When can I", "Who can", "Do I need a password to"]
VERBS = ["reset", "change", "cancel", "export", "import", "share", "delete", "rename", "archive",
         "restore", "download", "upload", "merge", "split", "copy", "move", "lock", "unlock",
         "verify", "update", "configure", "disable", "enable", "schedule", "print", "sync",
         "transfer", "recover", "refund", "upgrade", "downgrade", "pause", "resume", "translate",
         "encrypt", "tag", "filter", "sort", "search", "approve"]
OBJECTS = ["my password", "my subscription", "an invoice", "my profile picture", "the billing address",
           "a shared folder", "my two-factor settings", "a team member", "the API key", "my order",
           "a payment method", "the notification emails", "my workspace", "an old project",
           "the dark mode", "a calendar event", "the audit log", "my phone number", "a gift card",
           "the default language", "a support ticket", "my saved reports", "a webhook",
           "the data retention policy", "a custom domain", "my username", "a backup",
           "the mobile app", "a discount code", "my shipping label"]
CONTEXTS = ["on my phone", "in the web app", "for my whole team", "without an account",
            "after the free trial", "from the admin console", "on a Mac", "on Windows",
            "while traveling abroad", "on the Enterprise plan", "using the API", "in bulk",
            "after cancelling", "before the renewal date", "with a guest account"]

# Kinds of repeat and their shares of the 3000 repeats.
REPEAT_KINDS = [("exact", 0.40), ("case", 0.20), ("spacing", 0.15), ("punctuation", 0.15),
                ("case + spacing + punctuation", 0.10)]


def app_key(question):
    return "app:" + hashlib.md5(question.lower().encode()).hexdigest()


def _case(rng, q):
    words = q.split(" ")
    kind = rng.randrange(4)
    if kind == 0:
        return q.lower()
    if kind == 1:
        return q.upper()
    if kind == 2:
        return " ".join(w.capitalize() for w in words)
    i = rng.randrange(len(words))
    words[i] = words[i].upper()
    return " ".join(words)


def _spacing(rng, q):
    words = q.split(" ")
    kind = rng.randrange(4)
    if kind == 0:
        return "  " + q
    if kind == 1:
        return q + " "
    if kind == 2:
        i = rng.randrange(1, len(words))
        return " ".join(words[:i]) + "  " + " ".join(words[i:])
    return " " + q.replace(" ", "  ", 1) + "\t"


def _punct(rng, q):
    base = q.rstrip("?")
    return base + rng.choice(["", "??", "?!", ".", " ?", "???", "!"])


def _variant(rng, kind, q):
    if kind == "exact":
        return q
    if kind == "case":
        return _case(rng, q)
    if kind == "spacing":
        return _spacing(rng, q)
    if kind == "punctuation":
        return _punct(rng, q)
    return _punct(rng, _spacing(rng, _case(rng, q)))


def workload(n=10000, repeat_share=0.30, seed=8):
    """[(question, base index, kind)]: n questions, round(n * repeat_share) of them repeats of an
    earlier base question (chosen uniformly among those already asked) in one of REPEAT_KINDS;
    the base questions are distinct after normalization."""
    rng = random.Random(seed)
    n_rep = round(n * repeat_share)
    n_new = n - n_rep
    combos = set()
    while len(combos) < n_new:
        combos.add((rng.randrange(len(OPENERS)), rng.randrange(len(VERBS)),
                    rng.randrange(len(OBJECTS)), rng.randrange(len(CONTEXTS))))
    bases = [f"{OPENERS[a]} {VERBS[b]} {OBJECTS[c]} {CONTEXTS[d]}?" for a, b, c, d in sorted(combos)]
    rng.shuffle(bases)
    kinds = []
    for kind, share in REPEAT_KINDS:
        kinds += [kind] * round(n_rep * share)
    kinds = (kinds + ["exact"] * n_rep)[:n_rep]
    rng.shuffle(kinds)
    tail = [False] * (n_new - 1) + [True] * n_rep
    rng.shuffle(tail)
    slots = [False] + tail  # the first question is always new
    out, asked, nb, nk = [], [], 0, 0
    for is_rep in slots:
        if is_rep and asked:
            base = rng.choice(asked)
            kind = kinds[nk]
            nk += 1
            out.append((_variant(rng, kind, bases[base]), base, kind))
        else:
            out.append((bases[nb], nb, "new"))
            asked.append(nb)
            nb += 1
    return out


def expected_answer(question):
    return f'Answer to "{question}" (model {MODEL})'


def post_question(port, question):
    """What the app does on a miss: one chat-completions call (a new connection, like the module)."""
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": question}]}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/v1/chat/completions", body=body,
                     headers={"Content-Type": "application/json"})
        data = conn.getresponse().read()
    finally:
        conn.close()
    return json.loads(data)["choices"][0]["message"]["content"]


def run_workload(c, backend_port, log, anomaly, n=10000):
    """Both ways over the same questions, alternating (A B, B A, ...)."""
    cache = f"cs{c.run_id}"
    c.r.config_set("qa.backend-url", f"http://127.0.0.1:{backend_port}/v1")
    c.r.config_set("qa.timeout-ms", 30000)
    wl = workload(n)
    # Each side's expected answer per base question: the answer to the form it first sent to the
    # backend under that key (the app keys on question.lower(), the module on its normalization).
    app_first, qa_first = {}, {}
    sides = {"app": {"hit": [], "miss": [], "calls": 0, "hits_by_kind": {}, "wrong": 0},
             "qa": {"hit": [], "miss": [], "calls": 0, "hits_by_kind": {}, "wrong": 0}}
    r = c.r

    def app(q, base, kind):
        s = sides["app"]
        t0 = time.perf_counter()
        key = app_key(q)
        v = r.get(key)
        hit = v is not None
        if not hit:
            v = post_question(backend_port, q).encode()
            r.setex(key, APP_TTL, v)
            s["calls"] += 1
        dt = (time.perf_counter() - t0) * 1e6
        want = app_first.setdefault(key, expected_answer(q))
        if v.decode() != want:
            s["wrong"] += 1
            if s["wrong"] <= 3:
                anomaly(f"client-side way: {q!r} got {v[:80]!r}, expected {want!r}")
        (s["hit"] if hit else s["miss"]).append(dt)
        if hit:
            s["hits_by_kind"][kind] = s["hits_by_kind"].get(kind, 0) + 1

    def qa(q, base, kind):
        s = sides["qa"]
        t0 = time.perf_counter()
        v = r.execute_command("QA.GET", cache, q)
        dt = (time.perf_counter() - t0) * 1e6
        # Which one it was: the answer names the question that was sent to the backend; a hit
        # replies the answer to an earlier form of the same base question.
        first = qa_first.get(base)
        hit = first is not None
        if not hit:
            qa_first[base] = expected_answer(q)
        want = qa_first[base]
        if v.decode() != want:
            s["wrong"] += 1
            if s["wrong"] <= 3:
                anomaly(f"QA.GET: {q!r} got {v[:80]!r}, expected {want!r}")
        (s["hit"] if hit else s["miss"]).append(dt)
        if hit:
            s["hits_by_kind"][kind] = s["hits_by_kind"].get(kind, 0) + 1

    for i in range(20):  # warm-up: connections, worker thread, code paths; not counted
        q = f"warm-up question number {i} {c.run_id}?"
        r.get(app_key(q))
        post_question(backend_port, q)
        r.execute_command("QA.GET", cache + "w", q)
        r.execute_command("QA.GET", cache + "w", q)
    info0 = c.qa_info()
    t_start = time.perf_counter()
    t_side = {"app": 0.0, "qa": 0.0}
    for i, (q, base, kind) in enumerate(wl):
        order = (("app", app), ("qa", qa)) if i % 2 == 0 else (("qa", qa), ("app", app))
        for name, fn in order:
            t0 = time.perf_counter()
            fn(q, base, kind)
            t_side[name] += time.perf_counter() - t0
        if (i + 1) % 2500 == 0:
            log(f"   {i + 1}/{n}: client-side hits {len(sides['app']['hit'])}, QA.GET hits {len(sides['qa']['hit'])}")
    elapsed = time.perf_counter() - t_start
    info1 = c.qa_info()
    d = lambda f: int(info1.get(f, 0)) - int(info0.get(f, 0))
    sides["qa"]["calls"] = d("qa_backend_calls")
    qa_hits_counted = d("qa_hits")
    if qa_hits_counted != len(sides["qa"]["hit"]):
        anomaly(f"client-side comparison: INFO qa counted {qa_hits_counted} hits, the replies show "
                f"{len(sides['qa']['hit'])}")
    kinds = {}
    for _, _, kind in wl:
        kinds[kind] = kinds.get(kind, 0) + 1
    return {"n": n, "sides": sides, "kinds": kinds, "elapsed_s": elapsed, "t_side": t_side,
            "bases": kinds.get("new", 0)}


# ---------------------------------------------------------------------------------------------
# client-side stampede


async def http_post_async(port, question):
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": question}]}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nConnection: close\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head[:60].decode(errors="replace"))
    return json.loads(payload)["choices"][0]["message"]["content"]


async def stampede_once(clients, backend_port, q):
    """Every client: GET; on a miss call the backend and SETEX. Returns what happened."""
    key = app_key(q)
    calls = 0
    errors = []

    async def one(cl):
        nonlocal calls
        t0 = time.perf_counter()
        try:
            v = await cl.get(key)
            if v is None:
                calls += 1
                v = (await http_post_async(backend_port, q)).encode()
                await cl.setex(key, APP_TTL, v)
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}"[:120])
            v = None
        return v, time.perf_counter() - t0

    t0 = time.perf_counter()
    results = await asyncio.wait_for(asyncio.gather(*(one(cl) for cl in clients)), 120)
    t1 = time.perf_counter()
    want = expected_answer(q).encode()
    wrong = sum(1 for v, _ in results if v != want)
    return {"total_s": t1 - t0, "backend_calls": calls, "wrong": wrong,
            "errors": len(errors), "error_example": errors[0] if errors else "",
            "fastest_s": min(x for _, x in results), "slowest_s": max(x for _, x in results)}


# ---------------------------------------------------------------------------------------------
# report


def pct(values, p):
    v = sorted(values)
    if not v:
        return float("nan")
    k = max(0, min(len(v) - 1, int(round(p / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


def md_workload(cw):
    s = cw["sides"]
    n = cw["n"]
    kinds = cw["kinds"]
    out = ["## 5. Against the client-side way\n"]
    rep_desc = ", ".join(f"{kinds.get(k, 0):,} {k}" for k, _ in REPEAT_KINDS)
    out.append(
        f"{n:,} questions asked from Python (redis-py {'RESP3' if cw.get('resp3') else 'default protocol'}, "
        f"one connection), {cw['bases']:,} distinct and {n - cw['bases']:,} repeats of an earlier "
        f"question ({rep_desc}: case is lower/upper/title/one word upper, spacing is doubled, leading "
        "or trailing blanks, punctuation is the trailing `?` dropped or turned into `??`, `?!`, `.`, "
        "`!`, ` ?`). Each question is asked both ways, one after the other (order alternating), with "
        "a demo backend that answers at once (0 ms delay, so the run stays short):\n\n"
        "- **client-side**: `key = \"app:\" + md5(question.lower())`, `GET key`; on a miss the app "
        f"POSTs the question to the backend itself (http.client, a new connection, like the module) "
        f"and `SETEX key {APP_TTL} answer`;\n"
        "- **QA.GET**: `QA.GET <cache> <question>`.\n\n"
        "Latency is measured around the whole step in the app (md5 included for the client-side "
        "way). Every reply is checked against the answer the backend gave for the first form of "
        "that question under that key; QA.GET's hits are also counted by `INFO qa`.\n")
    out.append("| way | hits | hit rate | backend calls | hit p50 µs | hit p90 µs | hit p99 µs | miss p50 ms | miss p99 ms | all questions (s) | wrong replies |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    names = {"app": "client-side: md5(question.lower()) + GET / SETEX", "qa": "QA.GET"}
    for k in ("app", "qa"):
        x = s[k]
        out.append(f"| {names[k]} | {len(x['hit']):,} | {100 * len(x['hit']) / n:.1f}% | {x['calls']:,} | "
                   f"{pct(x['hit'], 50):.0f} | {pct(x['hit'], 90):.0f} | {pct(x['hit'], 99):.0f} | "
                   f"{pct(x['miss'], 50) / 1e3:.2f} | {pct(x['miss'], 99) / 1e3:.2f} | {cw['t_side'][k]:.1f} | {x['wrong']} |")
    out.append("")
    out.append("Hits by kind of repeat (out of how many were asked):\n")
    out.append("| repeat | asked | client-side hits | QA.GET hits |")
    out.append("|---|---|---|---|")
    for k, _ in REPEAT_KINDS:
        out.append(f"| {k} | {kinds.get(k, 0):,} | {s['app']['hits_by_kind'].get(k, 0):,} | "
                   f"{s['qa']['hits_by_kind'].get(k, 0):,} |")
    out.append("")
    a50, q50 = pct(s["app"]["hit"], 50), pct(s["qa"]["hit"], 50)
    a99, q99 = pct(s["app"]["hit"], 99), pct(s["qa"]["hit"], 99)
    saved = s["app"]["calls"] - s["qa"]["calls"]
    out.append(
        f"Lowercasing alone catches exact and case repeats; QA.GET's normalization also catches the "
        f"spacing and punctuation variants, so it made {saved:,} fewer backend calls "
        f"({s['qa']['calls']:,} vs {s['app']['calls']:,}, {100 * saved / max(1, s['app']['calls']):.1f}% fewer). "
        f"A hit costs about the same from the app: p50 {q50:.0f} µs vs {a50:.0f} µs ({q50 / a50:.2f}×), "
        f"p99 {q99:.0f} µs vs {a99:.0f} µs: one round trip either way, with the hashing moved from "
        "the app into Redis.\n")
    cw["summary"] = {"app_hit_rate": len(s["app"]["hit"]) / n, "qa_hit_rate": len(s["qa"]["hit"]) / n,
                     "app_calls": s["app"]["calls"], "qa_calls": s["qa"]["calls"],
                     "app_p50": a50, "qa_p50": q50, "app_p99": a99, "qa_p99": q99}
    return "\n".join(out)
