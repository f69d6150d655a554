#!/usr/bin/env python3
"""Offline evaluation of the semantic tier: MiniLM cosine, with and without the guards.

    bench/setup_embeddings.sh
    bench/.venv/bin/python bench/eval_offline.py [--pairs tests/data/semantic_pairs.csv]
        [--sample N] [--markdown out.md] [--show-fp 0.90]

No Redis: embeds both questions of every pair with the same model as bench/embed_server.py,
takes the cosine, and asks the Rust guards (examples/guard_eval.rs, built with the crate's
core-only feature) for their verdict on the normalized pair. A pair is predicted duplicate
when its cosine clears the threshold (plain), or clears it and passes the guards (guarded).
Prints precision, recall and the share of pairs served per threshold, what each guard
refused, and the false positives at the thresholds asked for.

`--pairs` takes any `question1,question2,is_duplicate` CSV (a public set for evaluation only:
never commit one).
"""

import argparse
import csv
import os
import random
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

THRESHOLDS = [0.70, 0.75, 0.80, 0.82, 0.84, 0.85, 0.86, 0.87, 0.88, 0.89, 0.90, 0.91, 0.92,
              0.93, 0.94, 0.95, 0.96, 0.97, 0.98]


def load_pairs(path, sample=0, seed=7):
    with open(path, newline="", encoding="utf-8") as f:
        rows = [(r["question1"], r["question2"], int(r["is_duplicate"])) for r in csv.DictReader(f)
                if r.get("question1") and r.get("question2")]
    if sample and sample < len(rows):
        rows = random.Random(seed).sample(rows, sample)
    return rows


def guard_verdicts(pairs):
    """One verdict per pair from the Rust guards: "ok" or the refusal's name."""
    tgt = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    subprocess.run(["cargo", "build", "--quiet", "--release", "--features", "core-only",
                    "--example", "guard_eval"], cwd=ROOT, check=True)
    clean = lambda s: s.replace("\t", " ").replace("\n", " ").replace("\r", " ")
    data = "".join(f"{clean(a)}\t{clean(b)}\n" for a, b, _ in pairs)
    out = subprocess.run([os.path.join(tgt, "release", "examples", "guard_eval"), "--time"],
                         input=data, capture_output=True, text=True, check=True)
    sys.stderr.write(out.stderr)
    verdicts = out.stdout.split("\n")[: len(pairs)]
    assert len(verdicts) == len(pairs), "guard_eval lost lines"
    return verdicts


def cosines(pairs):
    from embed_server import Embedder
    import numpy as np
    emb = Embedder()
    texts = sorted({q for a, b, _ in pairs for q in (a, b)})
    vecs, _ = emb.embed(texts)
    index = {t: i for i, t in enumerate(texts)}
    return [float(np.dot(vecs[index[a]], vecs[index[b]])) for a, b, _ in pairs]


def curve(pairs, sims, verdicts, guarded):
    rows = []
    positives = sum(d for _, _, d in pairs)
    for t in THRESHOLDS:
        tp = fp = 0
        for (_, _, d), s, v in zip(pairs, sims, verdicts):
            if s >= t and (not guarded or v == "ok"):
                tp += d
                fp += 1 - d
        served = tp + fp
        rows.append({
            "t": t, "tp": tp, "fp": fp, "served": served,
            "precision": tp / served if served else 1.0,
            "recall": tp / positives if positives else 0.0,
            "hit_rate": served / len(pairs),
        })
    return rows


def at_recall(pairs, sims, verdicts, recall, guarded):
    """Precision at the highest threshold whose recall reaches `recall` (None if unreachable)."""
    positives = sum(d for _, _, d in pairs)
    scored = sorted(((s, d) for (_, _, d), s, v in zip(pairs, sims, verdicts)
                     if not guarded or v == "ok"), reverse=True)
    tp = fp = 0
    for s, d in scored:
        tp += d
        fp += 1 - d
        if tp / positives >= recall:
            return tp / (tp + fp), s
    return None, None


def table(rows):
    lines = ["| threshold | precision | recall | served | false positives |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['t']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} | "
                     f"{r['hit_rate']:.3f} | {r['fp']} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", default=os.path.join(ROOT, "tests", "data", "semantic_pairs.csv"))
    ap.add_argument("--sample", type=int, default=0, help="evaluate a random sample of N pairs")
    ap.add_argument("--markdown", help="also write the tables to this file")
    ap.add_argument("--show-fp", type=float, action="append", default=[],
                    help="list the false positives at this threshold (repeatable)")
    ap.add_argument("--show-refused", type=float, default=None,
                    help="list the true duplicates the guards refused at this threshold")
    ap.add_argument("--recalls", default="0.21,0.43",
                    help="compare plain and guarded precision at these recalls")
    args = ap.parse_args()

    pairs = load_pairs(args.pairs, args.sample)
    verdicts = guard_verdicts(pairs)
    sims = cosines(pairs)
    n, pos = len(pairs), sum(d for _, _, d in pairs)
    out = [f"{os.path.basename(args.pairs)}: {n} pairs, {pos} duplicates ({pos / n:.0%})", ""]

    plain = curve(pairs, sims, verdicts, guarded=False)
    guarded = curve(pairs, sims, verdicts, guarded=True)
    out += ["Plain cosine:", "", table(plain), "", "Cosine + guards:", "", table(guarded), ""]

    out += ["Precision at equal recall:", "",
            "| recall | plain precision (threshold) | guarded precision (threshold) |",
            "|---|---|---|"]
    for r in (float(x) for x in args.recalls.split(",") if x):
        p0, t0 = at_recall(pairs, sims, verdicts, r, guarded=False)
        p1, t1 = at_recall(pairs, sims, verdicts, r, guarded=True)
        fmt = lambda p, t: "unreachable" if p is None else f"{p:.3f} ({t:.3f})"
        out.append(f"| {r:.2f} | {fmt(p0, t0)} | {fmt(p1, t1)} |")
    out.append("")

    # What each guard refused, over all pairs (whatever their cosine) and above 0.80.
    from collections import Counter
    names = sorted(set(verdicts) - {"ok"})
    out += ["Guard refusals (all pairs / pairs with cosine >= 0.80):", "",
            "| guard | duplicates refused | non-duplicates refused |", "|---|---|---|"]
    for name in names:
        dup = Counter(s >= 0.80 for (_, _, d), s, v in zip(pairs, sims, verdicts) if v == name and d)
        non = Counter(s >= 0.80 for (_, _, d), s, v in zip(pairs, sims, verdicts)
                      if v == name and not d)
        out.append(f"| {name} | {sum(dup.values())} / {dup[True]} | "
                   f"{sum(non.values())} / {non[True]} |")
    out.append("")

    for t in args.show_fp:
        out.append(f"False positives at {t:.2f} (guarded):")
        for (a, b, d), s, v in sorted(zip(pairs, sims, verdicts), key=lambda x: -x[1]):
            if s >= t and v == "ok" and not d:
                out.append(f"- {s:.3f} {a!r} / {b!r}")
        out.append("")
    if args.show_refused is not None:
        out.append(f"Duplicates refused by a guard at {args.show_refused:.2f}:")
        for (a, b, d), s, v in sorted(zip(pairs, sims, verdicts), key=lambda x: -x[1]):
            if s >= args.show_refused and v != "ok" and d:
                out.append(f"- {s:.3f} [{v}] {a!r} / {b!r}")
        out.append("")

    text = "\n".join(out)
    print(text)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
