#!/usr/bin/env python3
"""Generates a question corpus and embeds it with all-MiniLM-L6-v2 int8 (384-d) for the ANN
benchmark. The questions come from templates x topic words made here (no downloaded data set):
support, product, how-to and trivia style questions, with paraphrased queries held out.

    bench/.venv/bin/python bench/ann/make_corpus.py --n 100000 --queries 1000 --out bench/ann/data

Writes <out>/base.f32 and <out>/query.f32 (row-major float32, unit vectors) and a .txt of the
questions for each. Everything it writes is git-ignored.
"""
import argparse
import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

SUBJECTS = """account password subscription invoice refund order delivery shipment warranty
laptop phone router printer camera headphones monitor keyboard battery charger app website
API key database backup server cluster container invoice payment card bank transfer loan
mortgage insurance policy claim ticket flight hotel booking reservation visa passport tax
return pension salary contract lease apartment car bike train bus recipe oven dough bread
coffee tea wine garden plant tree lawn dog cat puppy vaccine doctor appointment prescription
allergy diet workout marathon yoga sleep headache fever cough vitamin python rust java
javascript linux windows macos docker kubernetes git branch commit merge test deploy email
calendar meeting spreadsheet chart report slide presentation resume interview job promotion
course exam degree scholarship library book novel poem song guitar piano violin movie
series camera lens photo video podcast microphone speaker television remote game console
controller password manager vpn firewall antivirus wifi bluetooth cable adapter drive disk
memory processor graphics card motherboard fan cooler""".split()

PLACES = """France Germany Spain Italy Japan Brazil Canada Mexico India China Kenya Egypt
Norway Sweden Poland Greece Turkey Chile Peru Australia Ireland Portugal Vietnam Thailand
Korea Argentina Morocco Nigeria Finland Denmark Austria Hungary""".split()

VERBS = """reset cancel renew update change delete export import install configure upgrade
downgrade transfer track return repair replace clean charge connect disconnect share
restore backup sync verify activate deactivate unlock lock rename move""".split()

ADJ = """cheapest fastest best safest easiest quickest most reliable smallest lightest
quietest newest oldest strongest""".split()

TEMPLATES = [
    "how do i {v} my {s}",
    "how can i {v} my {s}",
    "what is the best way to {v} a {s}",
    "can you {v} my {s} for me",
    "why can't i {v} my {s}",
    "is it possible to {v} a {s} in {p}",
    "how long does it take to {v} a {s}",
    "how much does it cost to {v} a {s} in {p}",
    "what happens if i {v} my {s}",
    "where do i go to {v} my {s}",
    "what is the {a} {s} for {s2}",
    "which {s} is {a} for a {s2}",
    "what is the capital of {p}",
    "what language do people speak in {p}",
    "do i need a {s} to travel to {p}",
    "what is the difference between a {s} and a {s2}",
    "should i buy a {s} or a {s2}",
    "how do i {v} the {s} on my {s2}",
    "my {s} stopped working after i tried to {v} it, what now",
    "is a {s} better than a {s2} for {p}",
    "what should i do when my {s} will not {v}",
    "when is the {a} time to {v} a {s}",
]
PARAPHRASE = [
    ("how do i", "how would i"), ("how can i", "what's the way to"), ("my", "the"),
    ("what is", "what's"), ("can you", "could you"), ("best", "ideal"), ("do i need", "is a"),
]


def make(rng):
    t = rng.choice(TEMPLATES)
    return t.format(v=rng.choice(VERBS), s=rng.choice(SUBJECTS), s2=rng.choice(SUBJECTS),
                    p=rng.choice(PLACES), a=rng.choice(ADJ))


def paraphrase(q, rng):
    for a, b in rng.sample(PARAPHRASE, len(PARAPHRASE)):
        if a in q:
            q = q.replace(a, b, 1)
            break
    return q + rng.choice(["", "?", " please", " today", " quickly"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--out", default=os.path.join(HERE, "data"))
    ap.add_argument("--seed", type=int, default=16)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    seen, base = set(), []
    while len(base) < args.n:
        q = make(rng)
        if rng.random() < 0.5:
            q = paraphrase(q, rng)
        if q not in seen:
            seen.add(q)
            base.append(q)
    # Queries: paraphrases of corpus questions (near duplicates, the tier's real use) and
    # fresh questions (no near duplicate).
    queries = []
    for i in range(args.queries):
        if i % 2 == 0:
            queries.append(paraphrase(rng.choice(base), rng))
        else:
            queries.append(make(rng))
    from embed_server import Embedder

    emb = Embedder()
    os.makedirs(args.out, exist_ok=True)
    for name, texts in (("query", queries), ("base", base)):
        t0 = time.time()
        with open(os.path.join(args.out, name + ".txt"), "w") as f:
            f.write("\n".join(texts) + "\n")
        with open(os.path.join(args.out, name + ".f32.tmp"), "wb") as f:
            for start in range(0, len(texts), 4096):
                vecs, _ = emb.embed(texts[start:start + 4096], batch=256)
                f.write(vecs.astype("float32").tobytes())
                print(f"{name}: {start + len(vecs)}/{len(texts)} {time.time() - t0:.0f}s",
                      file=sys.stderr, flush=True)
        os.replace(os.path.join(args.out, name + ".f32.tmp"), os.path.join(args.out, name + ".f32"))


if __name__ == "__main__":
    main()
