#!/usr/bin/env python3
"""Live evaluation of the semantic tier through a real redis-server (`make eval-semantic`).

    bench/setup_embeddings.sh && cargo build --release --lib
    bench/.venv/bin/python bench/eval_semantic.py [--split test|tune|all] [--pairs FILE ...]
        [--module target/release/libredis_qa.so] [--no-docs]

Starts its own redis-server (Debian's, with the module from $QA_MODULE or
$CARGO_TARGET_DIR|target/release/libredis_qa.so) and bench/embed_server.py (real MiniLM
embeddings, and a /webhook backend whose answers are never cached) on free 127.0.0.1 ports,
and stops only those two processes (by pid) at the end.

Three runs over the labelled pairs:
1. guarded, per pair: its own cache `eval:g:<i>`; `QA.SET` question1 with a unique answer, then
   `QA.GET` question2 `SEMANTIC WITHMETA` with `qa.semantic-threshold 0`, so the best guarded
   match comes back with its similarity. At threshold t a pair is predicted duplicate when it
   was served `semantic` with similarity >= t (or `hit`: the same question after normalization).
2. the same with `qa.semantic-guards no`: the plain-cosine curve.
3. shared cache at the default threshold (or --threshold): every question1 in one cache, each
   question2 asked once; any served answer that is not its own pair's question1's counts as a
   false positive.

A verifier of your own (`qa.semantic-verify`, docs/verify.md) is measured with:

    QA_EVAL_VERIFY_URL=http://127.0.0.1:8080 [QA_EVAL_VERIFY=rerank] [QA_EVAL_VERIFY_MODEL=m] \
        make eval-semantic
    QA_EVAL_VERIFY=llm QA_EVAL_VERIFY_URL=https://llm.example/v1 QA_EVAL_VERIFY_MODEL=m \
        [QA_EVAL_API_KEY_FILE=path] make eval-semantic

`rerank` (the default) posts the rerank API (Cohere, Jina, TEI, vLLM, Infinity, llama.cpp) at
`{url}/rerank`; `llm` makes that OpenAI-compatible endpoint the chat backend, so the verifier's
yes/no questions *and every miss* go to it (one completion per pair and run: it costs what your
provider charges). `QA_EVAL_VERIFY_URL=embed` uses bench/embed_server.py's own `/rerank`, an
embedding-cosine stand-in that only shows the plumbing works. With a verifier the guards are
the loose set; without one, strict (docs/semantic.md). Results with a verifier are printed and
not written into docs/semantic.md unless --docs is given.

Prints the tables and, unless --no-docs, writes them into docs/semantic.md between the
`<!-- live-eval:begin -->` and `<!-- live-eval:end -->` markers.
"""

import argparse
import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
THRESHOLDS = [0.70, 0.75, 0.80, 0.82, 0.84, 0.85, 0.86, 0.87, 0.88, 0.89, 0.90, 0.92, 0.94,
              0.96, 0.98]
BEGIN, END = "<!-- live-eval:begin -->", "<!-- live-eval:end -->"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Procs:
    """The processes this script started; stopped by pid, newest first."""

    def __init__(self):
        self.procs = []

    def start(self, args, **kw):
        p = subprocess.Popen(args, **kw)
        self.procs.append(p)
        return p

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)


def start_embed_server(procs, log):
    py = os.path.join(HERE, ".venv", "bin", "python")
    if not os.path.exists(py):
        sys.exit("bench/.venv is missing: run bench/setup_embeddings.sh first")
    p = procs.start([py, os.path.join(HERE, "embed_server.py"), "--port", "0"],
                    stdout=subprocess.PIPE, stderr=log, text=True)
    deadline = time.monotonic() + 60
    line = ""
    while time.monotonic() < deadline and p.poll() is None:
        line = p.stdout.readline()
        if line.startswith("listening on "):
            return int(line.rsplit(":", 1)[1])
    sys.exit(f"embed server did not start (last line {line!r}); see its log")


def start_redis(procs, module, workdir):
    import redis
    port = free_port()
    logfile = os.path.join(workdir, "redis.log")
    procs.start(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", workdir, "--logfile", logfile,
                 "--loadmodule", os.path.abspath(module)])
    r = redis.Redis(host="127.0.0.1", port=port, protocol=2, decode_responses=True,
                    socket_timeout=60)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            r.ping()
            return r
        except redis.ConnectionError:
            time.sleep(0.05)
    with open(logfile, errors="replace") as f:
        sys.stderr.write(f.read()[-4000:])
    sys.exit("redis-server did not start")


def meta(reply):
    """WITHMETA reply (RESP2 flat field/value array, or a map) as a dict."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[0::2], reply[1::2]))


def load_pairs(paths, split):
    """Pairs of the given side (`tune`, `test` or `all`); rows without a split count as test."""
    out = []
    for path in paths:
        with open(path, newline="", encoding="utf-8") as f:
            out += [(r["question1"], r["question2"], int(r["is_duplicate"]))
                    for r in csv.DictReader(f)
                    if split == "all" or (r.get("split") or "test") == split]
    return out


def per_pair_run(r, pairs, tag):
    """[(similarity or None, served, matched)] per pair, each pair in its own cache."""
    out = []
    for i, (q1, q2, _) in enumerate(pairs):
        cache = f"eval:{tag}:{i}"
        r.execute_command("QA.SET", cache, q1, f"ANSWER {i}", "SEMANTIC")
        m = meta(r.execute_command("QA.GET", cache, q2, "SEMANTIC", "WITHMETA"))
        served = m.get("served")
        if served == "hit":
            sim = 1.0
        elif served == "semantic":
            sim = float(m["similarity"])
        else:
            sim = None
        out.append((sim, served, m.get("matched")))
    return out


def curve(pairs, results):
    positives = sum(d for _, _, d in pairs)
    rows = []
    for t in THRESHOLDS:
        tp = fp = 0
        fps = []
        for (q1, q2, d), (sim, _, _) in zip(pairs, results):
            if sim is not None and sim >= t:
                tp += d
                fp += 1 - d
                if not d:
                    fps.append((sim, q1, q2))
        served = tp + fp
        rows.append({"t": t, "precision": tp / served if served else 1.0,
                     "recall": tp / positives, "hit_rate": served / len(pairs), "fp": fps})
    return rows


def table(rows):
    lines = ["| threshold | precision | recall | hit rate | false positives |",
             "|---|---|---|---|---|"]
    for x in rows:
        lines.append(f"| {x['t']:.2f} | {x['precision']:.3f} | {x['recall']:.3f} | "
                     f"{x['hit_rate']:.3f} | {len(x['fp'])} |")
    return "\n".join(lines)


def shared_run(r, pairs):
    """All question1 in one cache, at the configured threshold."""
    answer_of = {}
    for q1, _, _ in pairs:
        if q1 not in answer_of:
            answer_of[q1] = f"ANSWER {len(answer_of)}"
            r.execute_command("QA.SET", "eval:shared", q1, answer_of[q1], "SEMANTIC")
    question_of = {a: q for q, a in answer_of.items()}
    duplicates = {(a, b) for a, b, d in pairs if d} | {(b, a) for a, b, d in pairs if d}
    tp = fp = 0
    wrong = []
    for q1, q2, d in pairs:
        m = meta(r.execute_command("QA.GET", "eval:shared", q2, "SEMANTIC", "WITHMETA"))
        if m.get("served") not in ("semantic", "hit"):
            continue
        got = question_of.get(m.get("answer"), m.get("matched"))
        if got == q2:
            continue  # the asked question is itself stored (another pair's question1)
        if got == q1 and d:
            tp += 1
        elif (q2, got) in duplicates:
            tp += 1  # another pair labels this match a paraphrase
        else:
            fp += 1
            wrong.append((m.get("similarity", "1"), q2, got))
    positives = sum(d for _, _, d in pairs)
    return tp, fp, positives, wrong


def verifier_settings(eport):
    """CONFIG SET pairs for the verifier named by QA_EVAL_VERIFY[_URL|_MODEL] (none if unset)."""
    url = os.environ.get("QA_EVAL_VERIFY_URL")
    if not url:
        return []
    kind = os.environ.get("QA_EVAL_VERIFY", "rerank")
    model = os.environ.get("QA_EVAL_VERIFY_MODEL")
    if url == "embed":
        url = f"http://127.0.0.1:{eport}"
    if kind == "rerank":
        out = [("qa.semantic-verify", "rerank"), ("qa.rerank-url", url)]
        return out + ([("qa.rerank-model", model)] if model else [])
    if kind == "llm":
        out = [("qa.semantic-verify", "llm"), ("qa.backend-format", "openai"),
               ("qa.backend-url", url)]
        if os.environ.get("QA_EVAL_API_KEY_FILE"):
            out.append(("qa.api-key-file", os.environ["QA_EVAL_API_KEY_FILE"]))
        return out + ([("qa.model", model)] if model else [])
    sys.exit(f"QA_EVAL_VERIFY must be rerank or llm, not {kind!r}")


def main():
    import redis

    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", action="append",
                    help="CSV of pairs (repeatable; default: the test side of "
                         "tests/data/semantic_pairs.csv and tests/data/semantic_heldout.csv)")
    ap.add_argument("--split", default="test", choices=["tune", "test", "all"])
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    ap.add_argument("--module", default=os.environ.get(
        "QA_MODULE", os.path.join(target, "release", "libredis_qa.so")))
    ap.add_argument("--threshold", help="for the shared-cache run (default: the module's)")
    ap.add_argument("--docs", default=os.path.join(ROOT, "docs", "semantic.md"))
    ap.add_argument("--no-docs", action="store_true")
    args = ap.parse_args()
    verifier = os.environ.get("QA_EVAL_VERIFY_URL")
    if verifier and "--docs" not in sys.argv and not args.no_docs:
        args.no_docs = True
    if not os.path.exists(args.module):
        sys.exit(f"{args.module} is missing: cargo build --release --lib (or set QA_MODULE)")
    if not shutil.which("redis-server"):
        sys.exit("redis-server is missing (make deps)")

    pairs = load_pairs(args.pairs or [
        os.path.join(ROOT, "tests", "data", "semantic_pairs.csv"),
        os.path.join(ROOT, "tests", "data", "semantic_heldout.csv")], args.split)
    workdir = tempfile.mkdtemp(prefix="qa-eval-")
    procs = Procs()
    try:
        with open(os.path.join(workdir, "embed.log"), "w") as log:
            eport = start_embed_server(procs, log)
            r = start_redis(procs, args.module, workdir)
            default_t = r.config_get("qa.semantic-threshold").get("qa.semantic-threshold")
            for k, v in [("qa.backend-format", "webhook"),
                         ("qa.backend-url", f"http://127.0.0.1:{eport}/webhook"),
                         ("qa.embed-url", f"http://127.0.0.1:{eport}/v1"),
                         ("qa.embed-model", "all-MiniLM-L6-v2"),
                         ("qa.semantic", "yes"), ("qa.semantic-guards", "yes"),
                         ("qa.semantic-audit-rate", "0")] + verifier_settings(eport):
                try:
                    r.config_set(k, v)
                except redis.ResponseError as e:
                    sys.exit(f"CONFIG SET {k} failed ({e}): this module has no semantic tier")

            t0 = time.monotonic()
            r.config_set("qa.semantic-threshold", "0")
            r.config_set("qa.semantic-guards", "yes")
            guarded = curve(pairs, per_pair_run(r, pairs, "g"))
            r.config_set("qa.semantic-guards", "no")
            plain = curve(pairs, per_pair_run(r, pairs, "p"))
            r.config_set("qa.semantic-guards", "yes")
            shared_t = args.threshold or default_t or "0.85"
            r.config_set("qa.semantic-threshold", shared_t)
            tp, fp, positives, wrong = shared_run(r, pairs)
            stats = r.execute_command("QA.STATS")
            elapsed = time.monotonic() - t0
    finally:
        procs.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    n, pos = len(pairs), sum(d for _, _, d in pairs)
    sources = ", ".join(f"`{os.path.relpath(p, ROOT)}`" for p in (args.pairs or [
        os.path.join(ROOT, "tests", "data", "semantic_pairs.csv"),
        os.path.join(ROOT, "tests", "data", "semantic_heldout.csv")]))
    out = [f"Live run, {args.split} side: {n} pairs ({pos} duplicates) from {sources}, "
           f"{elapsed:.0f} s, module `{os.path.basename(args.module)}`, MiniLM int8 embeddings.",
           "", "Plain cosine (`qa.semantic-guards no`):", "", table(plain), "",
           "Cosine + guards (`qa.semantic-guards yes`" + (
               f", verifier `{os.environ.get('QA_EVAL_VERIFY', 'rerank')}` at "
               f"{os.environ['QA_EVAL_VERIFY_URL']}):" if verifier else ", strict: no verifier):"),
           "", table(guarded), ""]
    shared_p = tp / (tp + fp) if tp + fp else 1.0
    out += [f"Shared cache at threshold {shared_t} (every question1 in one cache): "
            f"{tp + fp} served, {tp} right, {fp} wrong: precision {shared_p:.3f}, "
            f"recall {tp / positives:.3f}.", ""]
    if wrong:
        out += ["Wrong answers served in the shared cache:", ""]
        out += [f"- {s}: {q!r} got the answer of {g!r}" for s, q, g in wrong]
        out.append("")
    fps = next((x["fp"] for x in guarded if f"{x['t']:.2f}" == f"{float(shared_t):.2f}"), [])
    if fps:
        out += [f"Guarded false positives at {float(shared_t):.2f}:", ""]
        out += [f"- {s:.3f} {a!r} / {b!r}" for s, a, b in fps]
        out.append("")
    out += ["`QA.STATS` after the runs:", "", "```", repr(stats), "```"]
    text = "\n".join(out)
    print(text)

    if not args.no_docs and os.path.exists(args.docs):
        with open(args.docs, encoding="utf-8") as f:
            doc = f.read()
        if BEGIN in doc and END in doc:
            head, rest = doc.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            with open(args.docs, "w", encoding="utf-8") as f:
                f.write(f"{head}{BEGIN}\n{text}\n{END}{tail}")
            print(f"\nwrote the tables into {os.path.relpath(args.docs, ROOT)}")


if __name__ == "__main__":
    main()
