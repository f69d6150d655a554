#!/usr/bin/env python3
"""redis-qa quickstart: ask the same question twice through QA.GET and time both calls.

    pip install -r requirements.txt
    python3 quickstart.py [--host HOST] [--port PORT] [--cache NAME] [QUESTION]

Host and port default to $REDIS_HOST / $REDIS_PORT, else 127.0.0.1:6379. The server needs
the redis-qa module loaded with `qa.backend-url` set (see the project README; the bundled
demo backend works: `target/release/examples/demo_backend 127.0.0.1:8089 2000`).

The first call is a cache miss (Redis asks the LLM backend and stores the answer), the second
a hit served from Redis. If Redis cannot be reached, `ask` falls back to calling the LLM
directly, so the application keeps working without the cache.
"""

import argparse
import os
import sys
import time

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry


def call_llm_directly(question):
    # ---------------------------------------------------------------------------------
    # STUB: replace with your real LLM call (OpenAI SDK, HTTP request, ...). It only runs
    # when Redis is unreachable, so the cache is an optimisation, not a dependency.
    # ---------------------------------------------------------------------------------
    return f"(stub answer, LLM called directly) {question}"


def ask(r, cache, question):
    """Returns (answer, path): path is "redis" or "direct" (Redis was unreachable).

    Errors that Redis itself replies (redis.ResponseError, e.g. "backend timeout" or
    "question is empty") are raised: Redis is up, so falling back would hide the problem.
    """
    try:
        return r.execute_command("QA.GET", cache, question), "redis"
    except (redis.ConnectionError, redis.TimeoutError) as e:
        print(f"  redis unreachable ({e.__class__.__name__}: {e}); calling the LLM directly")
        return call_llm_directly(question), "direct"


def qa_counters(r):
    """hits and misses from INFO qa (server-wide), or None if they cannot be read."""
    try:
        info = r.info("qa")
        return info["qa_hits"], info["qa_misses"]
    except (redis.RedisError, KeyError):
        return None


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default=os.environ.get("REDIS_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("REDIS_PORT", "6379")))
    p.add_argument("--cache", default="faq")
    p.add_argument("question", nargs="?", default="What is our refund policy?")
    args = p.parse_args()

    # socket_timeout must exceed the module's qa.timeout-ms: a miss waits for the LLM.
    # One quick retry, so an unreachable Redis falls back in milliseconds, not seconds.
    r = redis.Redis(
        host=args.host,
        port=args.port,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=60,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1),
    )
    print(f"redis {args.host}:{args.port}, cache {args.cache!r}")
    print(f"Q: {args.question}")
    for attempt in ("first", "second"):
        before = qa_counters(r)
        start = time.perf_counter()
        answer, path = ask(r, args.cache, args.question)
        ms = (time.perf_counter() - start) * 1000
        after = qa_counters(r) if path == "redis" else None
        if path == "direct":
            how = "direct LLM call (no cache)"
        elif before is None or after is None:
            how = "redis"
        elif after[0] > before[0]:
            how = "redis, cache hit"
        elif after[1] > before[1]:
            how = "redis, cache miss (LLM called)"
        else:
            how = "redis"
        print(f"{attempt} ask: {ms:8.1f} ms  via {how}")
        print(f"  A: {answer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
