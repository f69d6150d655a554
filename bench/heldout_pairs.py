#!/usr/bin/env python3
"""Builds tests/data/semantic_heldout.csv (test side only) from the hand-written
tests/data/semantic_heldout_*.txt files, and tests/data/semantic_tune_extra.csv (tune side
only) from tests/data/semantic_tune_extra.txt.

    python3 bench/heldout_pairs.py

In the text files, `@ topic lang` starts a block, `Q text` a question, `= text` a paraphrase
of the last `Q` (label 1, kind `paraphrase`), `- kind | text` a hard negative of the last `Q`
(label 0). Output columns: question1,question2,is_duplicate,split,topic,kind,lang, with
split `test` for the held-out files (never used for tuning) and `tune` for the extra tune
file.
"""

import csv
import glob
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")


def parse(path, split):
    topic = lang = q = None
    for n, line in enumerate(open(path, encoding="utf-8"), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        tag, _, rest = line.partition(" ")
        if tag == "@":
            topic, lang = rest.split()
        elif tag == "Q":
            q = rest
        elif tag == "=":
            yield (q, rest, 1, split, topic, "paraphrase", lang)
        elif tag == "-":
            kind, _, text = rest.partition(" | ")
            assert text, f"{path}:{n}: '- kind | text' expected"
            yield (q, text, 0, split, topic, kind.strip(), lang)
        else:
            raise SystemExit(f"{path}:{n}: unknown line {line!r}")


def write(paths, split, out):
    rows = []
    for path in paths:
        rows.extend(parse(path, split))
    seen = set()
    with open(os.path.join(DATA, out), "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["question1", "question2", "is_duplicate", "split", "topic", "kind", "lang"])
        for r in rows:
            if (r[0], r[1]) in seen:
                continue
            seen.add((r[0], r[1]))
            w.writerow(r)
    print(f"{out}: {len(seen)} pairs")


def main():
    write(sorted(glob.glob(os.path.join(DATA, "semantic_heldout_*.txt"))), "test",
          "semantic_heldout.csv")
    write([os.path.join(DATA, "semantic_tune_extra.txt")], "tune", "semantic_tune_extra.csv")


if __name__ == "__main__":
    main()
