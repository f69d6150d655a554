#!/usr/bin/env python3
"""A small RAG service behind redis-qa: the webhook backend of `qa.backend-format webhook`.

    python3 rag_service.py [--port 8090] [--docs DIR]

POST / with redis-qa's webhook request ({"cache", "question", "normalized", "model",
"system"}, plus "context" when the asker sent CONTEXT). It retrieves the documents of DIR
(markdown files) that share the most keywords with the question, "generates" the answer
from their best matching sentences (extractive: no model needed, so the example runs
anywhere) and replies {"answer": ..., "sources": [<file names>]}. redis-qa stores the
sources with the answer, so `QA.INVALIDATE <cache> SOURCE <file>` drops exactly the answers
built from a file once it changes.

Documents are read on every request: edit one and the next regenerated answer uses it.
Standard library only.
"""

import argparse
import json
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STOPWORDS = set(
    """a an and are at be can do does for from get how i if in is it long much my of on or
    our the to what when where which who why will with you your""".split()
)


def keywords(text):
    """Lowercase words minus stopwords, with a plural 's' dropped (refunds -> refund)."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return {w[:-1] if len(w) > 3 and w.endswith("s") else w for w in words if w not in STOPWORDS}


def load_docs(directory):
    docs = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith(".md"):
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                docs[name] = f.read()
    return docs


def sentences(doc):
    body = "\n".join(l for l in doc.splitlines() if not l.startswith("#"))
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", body) if s.strip()]


def answer(question, docs):
    """(answer, sources): the best sentence of each document sharing keywords with the
    question, from the best document and any scoring at least half as well."""
    q = keywords(question)
    scored = sorted(((len(q & keywords(text)), name) for name, text in docs.items()), reverse=True)
    best = scored[0][0] if scored else 0
    if best == 0:
        return "I found nothing about that in the documents.", []
    picked = [name for score, name in scored if score > 0 and 2 * score >= best][:2]
    parts = []
    for name in picked:
        s = max(sentences(docs[name]), key=lambda s: len(q & keywords(s)))
        parts.append(s)
    return " ".join(parts), picked


class Service:
    """The HTTP service, in a thread of the caller's process (or run as a script)."""

    def __init__(self, docs_dir, host="127.0.0.1", port=0):
        self.docs_dir = docs_dir
        self.calls = 0
        self.lock = threading.Lock()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    req = json.loads(self.rfile.read(length) or b"{}")
                    text, sources = answer(req.get("question", ""), load_docs(service.docs_dir))
                    body = json.dumps({"answer": text, "sources": sources}).encode()
                    status = 200
                    with service.lock:
                        service.calls += 1
                except (ValueError, OSError) as e:
                    body, status = json.dumps({"error": str(e)}).encode(), 400
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.url = "http://%s:%d/" % self.server.server_address[:2]

    def start(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--docs", default=os.path.join(here, "docs"))
    a = p.parse_args()
    s = Service(a.docs, a.host, a.port)
    print("RAG service on", s.url, "over", a.docs, flush=True)
    s.server.serve_forever()


if __name__ == "__main__":
    main()
