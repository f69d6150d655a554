#!/usr/bin/env python3
"""The whole story: answers that know their sources, and an edit that regenerates only
the answers built from the edited document.

    pip install redis
    python3 demo.py [--host HOST] [--port PORT] [--cache faq]

Needs a redis-server with the redis-qa module. The demo starts the RAG service of
rag_service.py (in this process, over a copy of docs/ in a temporary directory: the repo's
files are never edited), points the module at it (CONFIG SET qa.backend-format webhook,
qa.backend-url; the old values are put back at the end) and, in the cache (emptied first
with QA.INVALIDATE):
  1. asks five questions (misses: the service answers, citing its documents), then again
     (hits, with the same sources);
  2. edits refunds.md (30 days become 14), lists the answers citing it (QA.SOURCES ...
     WITHKEYS) and drops them (QA.INVALIDATE <cache> SOURCE refunds.md);
  3. asks the five questions again: only those that cited refunds.md are regenerated (and
     say 14 days), the others are still hits.
Exits 1 if any of that does not hold.
"""

import argparse
import os
import shutil
import sys
import tempfile

import redis

from rag_service import Service

QUESTIONS = [
    "How many days do I have to ask for a refund?",
    "How long does standard shipping take?",
    "How long is the warranty on a device?",
    "How do I reset my password?",
    "Is express shipping refunded like other items?",
]


def ask(r, cache, question):
    """(answer, served, sources) of QA.GET ... WITHMETA."""
    reply = r.execute_command("QA.GET", cache, question, "WITHMETA")
    m = dict(zip(reply[::2], reply[1::2])) if isinstance(reply, list) else reply
    return m["answer"], m["served"], list(m.get("sources") or [])


def round_of_questions(r, cache, title):
    print(f"\n== {title}")
    out = {}
    for q in QUESTIONS:
        a, served, sources = ask(r, cache, q)
        out[q] = (a, served, sources)
        print(f"[{served:>4}] {q}\n       -> {a}\n       sources: {', '.join(sources) or '-'}")
    return out


def main():
    p = argparse.ArgumentParser(description="redis-qa RAG demo")
    p.add_argument("--host", default=os.environ.get("REDIS_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("REDIS_PORT", "6379")))
    p.add_argument("--cache", default="faq")
    a = p.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    r = redis.Redis(host=a.host, port=a.port, decode_responses=True, protocol=2)

    docs = tempfile.mkdtemp(prefix="qa-rag-")
    shutil.copytree(os.path.join(here, "docs"), docs, dirs_exist_ok=True)
    service = Service(docs).start()
    saved = {k: r.config_get(k)[k] for k in ("qa.backend-format", "qa.backend-url")}
    failures = []
    try:
        r.config_set("qa.backend-format", "webhook")
        r.config_set("qa.backend-url", service.url)
        r.execute_command("QA.INVALIDATE", a.cache)

        first = round_of_questions(r, a.cache, "1. first asks: the RAG service answers")
        again = round_of_questions(r, a.cache, "   asked again: served from Redis")
        if any(v[1] != "miss" for v in first.values()):
            failures.append("the first round was not all misses")
        if any(v[1] != "hit" or v[2] != first[q][2] for q, v in again.items()):
            failures.append("the second round was not all hits with the same sources")
        calls_before = service.calls

        print("\n== 2. refunds.md changes: 30 days become 14")
        path = os.path.join(docs, "refunds.md")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text.replace("within 30 days", "within 14 days"))
        citing = r.execute_command("QA.SOURCES", a.cache, "refunds.md", "WITHKEYS")
        citing = dict(zip(citing[::2], citing[1::2])) if isinstance(citing, list) else citing
        print(f"QA.SOURCES {a.cache} refunds.md WITHKEYS:")
        for key, question in citing.items():
            print(f"   {key}  {question}")
        n = r.execute_command("QA.INVALIDATE", a.cache, "SOURCE", "refunds.md")
        print(f"QA.INVALIDATE {a.cache} SOURCE refunds.md -> {n}")

        third = round_of_questions(r, a.cache, "3. asked again after the edit")
        cited = {q for q, v in first.items() if "refunds.md" in v[2]}
        if n != len(cited) or set(citing.values()) != cited:
            failures.append(f"{n} answers invalidated, {len(cited)} cited refunds.md")
        for q, (answer, served, _) in third.items():
            want = "miss" if q in cited else "hit"
            if served != want:
                failures.append(f"{q!r} was a {served}, not a {want}")
        if not cited or any("14 days" not in third[q][0] for q in cited):
            failures.append("a regenerated answer does not say 14 days")
        regenerated = service.calls - calls_before
        print(f"\nRAG service calls after the edit: {regenerated} "
              f"(the {len(cited)} answers that cited refunds.md; {len(QUESTIONS) - len(cited)} hits)")
        if regenerated != len(cited):
            failures.append(f"{regenerated} service calls after the edit, not {len(cited)}")
    finally:
        for k, v in saved.items():
            r.config_set(k, v)
        service.stop()
        shutil.rmtree(docs, ignore_errors=True)
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        return 1
    print("\nOK: only the answers citing the edited document were regenerated.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
