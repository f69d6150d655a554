#!/usr/bin/env python3
"""redis-qa from asyncio (redis.asyncio): a miss, a hit, and a burst of concurrent askers.

    pip install -r requirements.txt
    python3 asyncio_client.py [--host HOST] [--port PORT] [--cache NAME] [--burst N] [QUESTION]

Host and port default to $REDIS_HOST / $REDIS_PORT, else 127.0.0.1:6379. The server needs
the redis-qa module loaded with `qa.backend-url` set (see the project README).

QUESTION is asked twice: a cache miss (Redis asks the LLM backend and stores the answer),
then a hit. Then N tasks (default 10) ask another question at the same moment: Redis makes
one LLM call and every task gets its answer. If Redis cannot be reached, `ask` falls back
to calling the LLM directly, so the application keeps working without the cache.
"""

import argparse
import asyncio
import os
import sys
import time

import redis
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

BURST_QUESTION = "How do I reset my password?"


async def call_llm_directly(question):
    # ---------------------------------------------------------------------------------
    # STUB: replace with your real LLM call (an async OpenAI client, an HTTP request, ...).
    # It only runs when Redis is unreachable, so the cache is an optimisation, not a
    # dependency.
    # ---------------------------------------------------------------------------------
    return f"(stub answer, LLM called directly) {question}"


async def ask(r, cache, question):
    """Returns (answer, path): path is "redis" or "direct" (Redis was unreachable).

    Errors that Redis itself replies (redis.ResponseError, e.g. "question is empty") are
    raised: Redis is up, so falling back would hide the problem.
    """
    try:
        return await r.execute_command("QA.GET", cache, question), "redis"
    except (redis.ConnectionError, redis.TimeoutError) as e:
        print(f"  redis unreachable ({e.__class__.__name__}: {e}); calling the LLM directly")
        return await call_llm_directly(question), "direct"


async def qa_counters(r):
    """hits, misses and backend_calls from INFO qa (server-wide), or None."""
    try:
        info = await r.info("qa")
        return info["qa_hits"], info["qa_misses"], info["qa_backend_calls"]
    except (redis.RedisError, KeyError):
        return None


async def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default=os.environ.get("REDIS_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("REDIS_PORT", "6379")))
    p.add_argument("--cache", default="faq")
    p.add_argument("--burst", type=int, default=10)
    p.add_argument("question", nargs="?", default="What is our refund policy?")
    args = p.parse_args()

    # socket_timeout must exceed the module's qa.timeout-ms: a miss waits for the LLM.
    # One quick retry, so an unreachable Redis falls back in milliseconds, not seconds.
    # Each concurrent QA.GET holds its own pooled connection while it waits.
    r = redis.asyncio.Redis(
        host=args.host,
        port=args.port,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=60,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1),
        max_connections=max(args.burst, 1) + 1,
    )
    try:
        print(f"redis {args.host}:{args.port}, cache {args.cache!r}")
        print(f"Q: {args.question}")
        for attempt in ("first", "second"):
            before = await qa_counters(r)
            start = time.perf_counter()
            answer, path = await ask(r, args.cache, args.question)
            ms = (time.perf_counter() - start) * 1000
            after = await qa_counters(r) if path == "redis" else None
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

        if args.burst > 0:
            before = await qa_counters(r)
            start = time.perf_counter()
            results = await asyncio.gather(
                *(ask(r, args.cache, BURST_QUESTION) for _ in range(args.burst))
            )
            ms = (time.perf_counter() - start) * 1000
            after = await qa_counters(r)
            calls = "?" if before is None or after is None else after[2] - before[2]
            answers = sorted({a for a, _ in results})
            paths = sorted({p for _, p in results})
            print(f"{args.burst} concurrent asks: {ms:8.1f} ms  via {'+'.join(paths)}, "
                  f"LLM calls through redis: {calls}")
            print(f"  Q: {BURST_QUESTION}")
            for a in answers:
                print(f"  A: {a}")
    finally:
        await r.aclose()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
