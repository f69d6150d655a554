#!/usr/bin/env python3
"""redis-qa streaming (QA.STREAM) from redis-py: a typing effect on a miss, an instant hit.

    pip install -r requirements.txt
    python3 stream.py [--host HOST] [--port PORT] [--cache NAME] [--readers N] [QUESTION]

Host and port default to $REDIS_HOST / $REDIS_PORT, else 127.0.0.1:6379. The server needs
the redis-qa module loaded with `qa.backend-url` set (see the project README).

QUESTION is asked twice with the sync client: a miss, whose answer is printed piece by
piece as the model writes it (read from a Redis Stream with XREAD BLOCK), then a hit, whose
answer comes whole at once. Then N asyncio tasks (default 3) ask another question at the
same moment: they share one backend call and read the same stream, each from its start.
"""

import argparse
import asyncio
import os
import sys
import time

import redis
import redis.asyncio

READERS_QUESTION = "How do I reset my password?"


def as_map(reply):
    """QA.STREAM's reply as a dict (RESP3 gives one; RESP2 a flat list)."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[0::2], reply[1::2]))


def ask(r, cache, question):
    """Yields (served, piece) pairs: once on a hit, piece by piece on a miss."""
    reply = as_map(r.execute_command("QA.STREAM", cache, question))
    served = reply["served"]
    if "answer" in reply:
        yield served, reply["answer"]
        return
    key, last = reply["stream"], "0"  # from the start: pieces written before we came
    while True:
        for _, entries in r.xread({key: last}, block=5000) or []:
            for last, fields in entries:
                if "error" in fields:  # the error QA.GET would have replied
                    raise RuntimeError(fields["error"])
                if "end" in fields:  # finish reason (and token counts)
                    return
                yield served, fields["text"]


async def ask_async(r, cache, question):
    """The same read loop with redis.asyncio; returns (served, pieces)."""
    reply = as_map(await r.execute_command("QA.STREAM", cache, question))
    if "answer" in reply:
        return reply["served"], [reply["answer"]]
    key, last, pieces = reply["stream"], "0", []
    while True:
        for _, entries in await r.xread({key: last}, block=5000) or []:
            for last, fields in entries:
                if "error" in fields:
                    raise RuntimeError(fields["error"])
                if "end" in fields:
                    return reply["served"], pieces
                pieces.append(fields["text"])


def show(r, cache, question):
    start = time.perf_counter()
    first = None
    count = 0
    served = "?"
    print("A: ", end="", flush=True)
    for served, piece in ask(r, cache, question):
        if first is None:
            first = (time.perf_counter() - start) * 1000
        count += 1
        print(piece, end="", flush=True)  # the typing effect
    total = (time.perf_counter() - start) * 1000
    print()
    print(
        f"   ({served}: first piece after {first:.1f} ms, {count} piece(s), "
        f"whole answer after {total:.1f} ms)"
    )


async def readers(host, port, cache, n):
    clients = [redis.asyncio.Redis(host=host, port=port, decode_responses=True) for _ in range(n)]
    try:
        results = await asyncio.gather(*(ask_async(c, cache, READERS_QUESTION) for c in clients))
    finally:
        for c in clients:
            await c.aclose()
    served = sorted(s for s, _ in results)
    same = all(p == results[0][1] for _, p in results)
    print(f"Q: {READERS_QUESTION} ({n} asyncio readers at once)")
    print(f"   served: {', '.join(served)}")
    print(f"   identical pieces: {'yes' if same else 'no'} ({len(results[0][1])} pieces)")
    print(f"   answer: {''.join(results[0][1])}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default=os.environ.get("REDIS_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("REDIS_PORT", "6379")))
    p.add_argument("--cache", default="faq")
    p.add_argument("--readers", type=int, default=3)
    p.add_argument("question", nargs="?", default="What is retrieval-augmented generation?")
    a = p.parse_args()
    r = redis.Redis(host=a.host, port=a.port, decode_responses=True)
    try:
        print(f"Q: {a.question}")
        show(r, a.cache, a.question)  # a miss: typed as it arrives
        show(r, a.cache, a.question)  # a hit: at once
        asyncio.run(readers(a.host, a.port, a.cache, a.readers))
    except (redis.ConnectionError, redis.TimeoutError) as e:
        print(f"redis unreachable: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
