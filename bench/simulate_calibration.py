#!/usr/bin/env python3
"""Simulation of the semantic tier's audits and calibration (docs/verify.md).

    cargo build --release --lib
    python3 -m venv --system-site-packages .venv-sim && .venv-sim/bin/pip install matplotlib redis
    .venv-sim/bin/python bench/simulate_calibration.py [--questions 8000] [--no-plot]

A stream of questions with known intents goes through one cache of a real redis-server (with
the module from $QA_MODULE or target/release/libredis_qa.so) whose stub backend (in this
script, on a free 127.0.0.1 port) answers by intent:

- embeddings: 200 intents in 100 families of two look-alike siblings ("cancel" / "pause" a
  subscription); a question is its intent's vector plus noise. Same-intent questions have a
  cosine of about 0.94, siblings about 0.75, so a loose threshold (0.70) serves siblings'
  answers: wrong answers.
- chat: "Answer for intent N."; a yes/no question (max_tokens <= 16) is judged from the
  intents it names, like a perfect judge would: the audit's "do these two answers say the
  same thing" is yes when both answers name the same intent, the verifier's "would this
  answer answer both questions" when both questions have the same intent.

The guards are off (the stub's questions are not English) and the audit rate is 0.2 (so a
short stream shows what a long one at the default 0.02 would). Three runs of the same
stream: the loose threshold alone; with qa.semantic-target-precision 0.97 (calibration); with
qa.semantic-verify llm. Prints a table and writes docs/verify-calibration.png: the served
error rate (wrong answers among semantic hits, per window of 500 questions) and the
calibrated threshold over the stream.

Starts only its own redis-server and stub server, and stops them (by pid) at the end.
"""

import argparse
import http.server
import json
import math
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DIMS = 64
INTENTS = 200  # two siblings per family
VARIANTS = 30
WINDOW = 500


def unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def gauss(seed):
    r = random.Random(seed)
    return [r.gauss(0.0, 1.0) / math.sqrt(DIMS) for _ in range(DIMS)]


def intent_vector(i):
    family = gauss(("family", i // 2).__repr__())
    own = gauss(("intent", i).__repr__())
    return unit([f + 0.55 * o for f, o in zip(family, own)])


INTENT_VECTORS = [intent_vector(i) for i in range(INTENTS)]


def question(i, v):
    return f"question i{i} v{v}"


def embedding(text):
    m = re.search(r"i(\d+) v(\d+)", text)
    if not m:
        return unit(gauss(text))
    i, v = int(m.group(1)), int(m.group(2))
    noise = gauss(("variant", i, v).__repr__())
    return unit([a + 0.25 * b for a, b in zip(INTENT_VECTORS[i % INTENTS], noise)])


def intents_in(text):
    return [int(a or b) for a, b in re.findall(r"intent (\d+)|i(\d+) v", text)]


class Stub(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        if self.path.endswith("/embeddings"):
            out = {"data": [{"embedding": embedding(body.get("input", ""))}],
                   "usage": {"prompt_tokens": 8}}
        else:
            prompt = body["messages"][-1]["content"]
            if body.get("max_tokens", 1000) <= 16:
                if "Answer 1:" in prompt:
                    a = re.search(r"Answer 1: (.*)\nAnswer 2: (.*)\n", prompt)
                    same = a and intents_in(a.group(1)) == intents_in(a.group(2))
                else:
                    a = re.search(r"Question A: (.*)\nQuestion B: (.*)\n", prompt)
                    same = a and intents_in(a.group(1)) == intents_in(a.group(2))
                text = "yes" if same else "no"
            else:
                text = f"Answer for intent {intents_in(prompt)[0]}."
            out = {"choices": [{"message": {"content": text}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 20, "completion_tokens": 5}}
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stream(n, seed=7):
    """(intent, variant) pairs: intents Zipf-like (a few are asked often), variants uniform."""
    r = random.Random(seed)
    weights = [1.0 / (k + 1) ** 0.8 for k in range(INTENTS)]
    intents = r.choices(range(INTENTS), weights=weights, k=n)
    return [(i, r.randrange(VARIANTS)) for i in intents]


def run(module, stub_url, questions, extra):
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="qa-sim-")
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp,
            "--save", "", "--appendonly", "no", "--loadmodule", module,
            "--qa.backend-url", stub_url, "--qa.semantic", "yes",
            "--qa.semantic-guards", "no", "--qa.semantic-threshold", "0.70",
            "--qa.semantic-audit-rate", "0.2"] + extra
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = redis.Redis(port=port, protocol=2)
        deadline = time.time() + 10
        while True:
            try:
                r.ping()
                break
            except redis.ConnectionError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        rows = []
        for k, (i, v) in enumerate(questions):
            flat = r.execute_command("QA.GET", "sim", question(i, v), "WITHMETA")
            meta = dict(zip(flat[::2], flat[1::2]))
            served = meta[b"served"].decode()
            wrong = served == "semantic" and intents_in(meta[b"answer"].decode()) != [i]
            if k % 50 == 0:
                st = r.execute_command("QA.STATS", "sim")
                st = dict(zip(st[::2], st[1::2]))
                threshold = float(st[b"semantic_threshold"])
            rows.append((served, wrong, threshold))
        info = r.info("qa")
        return rows, info
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def windows(rows):
    out = []
    for start in range(0, len(rows) - WINDOW + 1, WINDOW // 5):
        w = rows[start:start + WINDOW]
        sem = [x for x in w if x[0] == "semantic"]
        err = sum(1 for x in sem if x[1]) / len(sem) if sem else 0.0
        out.append((start + WINDOW, err, len(sem) / WINDOW, w[-1][2]))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--questions", type=int, default=8000)
    ap.add_argument("--no-plot", action="store_true")
    a = ap.parse_args()
    module = os.environ.get("QA_MODULE", os.path.join(ROOT, "target/release/libredis_qa.so"))
    stub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    stub_url = f"http://127.0.0.1:{stub.server_address[1]}/v1"
    qs = stream(a.questions)
    runs = [
        ("threshold 0.70 alone", []),
        ("calibrated to 0.97", ["--qa.semantic-target-precision", "0.97"]),
        ("verifier llm", ["--qa.semantic-verify", "llm"]),
    ]
    results = {}
    print("| run | semantic hits | wrong answers served | error rate (all) | "
          f"error rate (last {WINDOW}) | final threshold | audits | verifier calls |")
    print("|---|---|---|---|---|---|---|---|")
    for name, extra in runs:
        rows, info = run(module, stub_url, qs, extra)
        results[name] = rows
        sem = [x for x in rows if x[0] == "semantic"]
        wrong = sum(1 for x in sem if x[1])
        last = windows(rows)[-1]
        print(f"| {name} | {len(sem)} ({len(sem) / len(rows):.1%}) | {wrong} | "
              f"{wrong / max(len(sem), 1):.3f} | {last[1]:.3f} | {rows[-1][2]:.2f} | "
              f"{info.get('qa_audited', 0)} | {info.get('qa_verify_calls', 0)} |")
    stub.shutdown()
    if a.no_plot:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for name, rows in results.items():
        w = windows(rows)
        ax1.plot([x[0] for x in w], [x[1] for x in w], label=name)
    ax1.axhline(0.03, color="grey", linestyle=":", label="target error 0.03")
    ax1.set_ylabel(f"served error rate\n(per {WINDOW} questions)")
    ax1.legend(fontsize=8)
    cal = results["calibrated to 0.97"]
    ax2.plot(range(1, len(cal) + 1), [x[2] for x in cal], color="tab:orange",
             label="effective threshold (calibrated, QA.STATS every 50 questions)")
    ax2.axhline(0.70, color="grey", linestyle=":", label="qa.semantic-threshold 0.70")
    ax2.set_ylabel("threshold")
    ax2.set_xlabel("questions")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    out = os.path.join(ROOT, "docs", "verify-calibration.png")
    fig.savefig(out, dpi=100)
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
