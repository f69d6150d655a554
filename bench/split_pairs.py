#!/usr/bin/env python3
"""Labels and splits tests/data/semantic_pairs.csv into a tune half and a test half (run once;
the split is committed and must not be redrawn after tuning has started).

    python3 bench/split_pairs.py            # rewrites tests/data/semantic_pairs.csv in place

Adds four columns to `question1,question2,is_duplicate`: `split` (tune/test), `topic` (from
keywords), `kind` (`paraphrase`, or the kind of hard negative, from the words that differ) and
`lang`. Stratified: within each (topic, kind) group the pairs are ordered by a hash of their
text and dealt alternately to tune and test, the first one to tune (so a group of one goes to
tune). Deterministic: the same file always gives the same split.
"""

import csv
import hashlib
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATH = os.path.join(ROOT, "tests", "data", "semantic_pairs.csv")

TOPICS = [
    ("billing", "refund invoice billing billed charge charged vat pay paypal klarna plan plans "
                "subscription trial discount price cost payment card coupon promo"),
    ("account", "password 2fa two-factor login log username profile account email sign"),
    ("shipping", "ship shipping deliver delivery package order orders return cart parcel"),
    ("hr", "payday payroll vacation sick overtime bonus expense benefits employees salary "
           "time off leave deposit 401k manager review"),
    ("travel", "flight hotel visa passport baggage bag luggage plane check-in seat train"),
    ("insurance", "deductible claim doctor covered cover plan's network surgery ambulance "
                  "checkups physical prescription dental"),
    ("banking", "savings checking checkbook checks transfer atm loan mortgage account holder "
                "insured overdraft"),
    ("telecom", "voicemail phone 5g 4g line roaming data sim internet"),
    ("developer", "api sdk webhook paginate pagination tls json xml client logging v1 v2 "
                  "python node go rust token endpoint"),
    ("product", "app dark mode offline language export import slack install document project "
                "version sso"),
]

NEG = {"not", "no", "never", "without", "none", "cannot"}
THIRD = {"their", "his", "her", "they", "he", "she", "someone", "else"}
PAIRS = [("to", "from"), ("before", "after"), ("within", "after")]


def words(s):
    return re.findall(r"[a-z0-9][a-z0-9'.-]*", s.lower())


def topic(a, b):
    w = set(words(a + " " + b))
    best, score = "general", 0
    for name, keys in TOPICS:
        n = sum(1 for k in keys.split() if k in w)
        if n > score:
            best, score = name, n
    return best


def kind(a, b, dup):
    if dup:
        return "paraphrase"
    wa, wb = words(a), words(b)
    sa, sb = set(wa), set(wb)
    na = [w for w in wa if any(c.isdigit() for c in w)]
    nb = [w for w in wb if any(c.isdigit() for c in w)]
    if sorted(na) != sorted(nb):
        return "number"
    if na != nb:
        return "order"
    if len(sa & NEG) != len(sb & NEG) or any(w.endswith("n't") for w in sa ^ sb):
        return "negation"
    if (sa & THIRD) != (sb & THIRD):
        return "person"
    if sa == sb:
        return "role"
    for x, y in PAIRS:
        if (x in sa and y in sb and y not in sa) or (y in sa and x in sb and x not in sa):
            return "role" if len(sa ^ sb) == 2 else "antonym"
    da, db = sa - sb, sb - sa
    if not da or not db:
        return "scope"
    for x in da:
        for y in db:
            for p in ("un", "dis", "de", "in", "non"):
                if x == p + y or y == p + x:
                    return "antonym"
    return "swap"


def main():
    with open(PATH, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f)]
    groups = {}
    for r in rows:
        a, b, d = r["question1"], r["question2"], int(r["is_duplicate"])
        r["topic"], r["kind"], r["lang"] = topic(a, b), kind(a, b, d), "en"
        groups.setdefault((r["topic"], r["kind"]), []).append(r)
    for g in groups.values():
        g.sort(key=lambda r: hashlib.sha1((r["question1"] + "\t" + r["question2"]).encode())
               .hexdigest())
        for i, r in enumerate(g):
            r["split"] = "tune" if i % 2 == 0 else "test"
    cols = ["question1", "question2", "is_duplicate", "split", "topic", "kind", "lang"]
    with open(PATH, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({c: r[c] for c in cols})


if __name__ == "__main__":
    main()
