"""QA.GET through redis-py (sync, pipelines, RESP3 and redis.asyncio): any client works.

The tests need a redis-server with the module loaded and `qa.backend-url` pointing at the
test backend of tests/common/backend.rs (it answers `Answer to "<question>" (model <m>)`),
with the default model (gpt-4o-mini) and no default system prompt. `tests/python_client.rs`
starts both and runs this file; by hand:

    QA_REDIS_PORT=6379 python3 -m pytest -q tests/python/test_redis_py.py

Environment: QA_REDIS_PORT (required), QA_REDIS_HOST (default 127.0.0.1). Backend calls are
counted through `INFO qa` (qa_backend_calls), so the tests also hold against any backend
that answers like the test one. Every test uses its own cache name, so the tests do not
depend on each other or on what the server already holds; they do assume no other client
sends misses to the server while they run (the counters are server-wide).
"""

import asyncio
import os
import uuid

import pytest
import redis
import redis.asyncio

MODEL = "gpt-4o-mini"
# Bounds every reply: a hung QA.GET fails the test instead of hanging the run.
SOCKET_TIMEOUT = 15


def answer_for(question, model=MODEL, system=""):
    """The test backend's answer (tests/common/backend.rs, answer_for)."""
    if system:
        return f'Answer to "{question}" (model {model}, system {system})'
    return f'Answer to "{question}" (model {model})'


def _port():
    port = os.environ.get("QA_REDIS_PORT")
    if not port:
        # An error, not a skip: a run that skips everything would exit 0 and prove nothing.
        pytest.fail(
            "QA_REDIS_PORT is not set: run through `cargo test --release --test "
            "python_client`, or point it at a server with the module and the test backend"
        )
    return int(port)


HOST = os.environ.get("QA_REDIS_HOST", "127.0.0.1")


@pytest.fixture
def port():
    return _port()


@pytest.fixture
def r(port):
    client = redis.Redis(
        host=HOST, port=port, decode_responses=True, socket_timeout=SOCKET_TIMEOUT
    )
    yield client
    client.close()


@pytest.fixture
def cache():
    """A cache name no other test (or earlier run against the same server) uses."""
    return f"pytest-{uuid.uuid4().hex[:12]}"


def qa_info(client):
    """The `qa` INFO section as {field without the qa_ prefix: int}."""
    info = client.info("qa")
    out = {k[3:]: int(v) for k, v in info.items() if k.startswith("qa_")}
    assert "backend_calls" in out, f"no qa_backend_calls in INFO qa: {info}"
    return out


def delta(before, after):
    return {k: after[k] - before[k] for k in before}


def entry_keys(client, cache):
    # The cache's generation key (made by its first write) is not an entry.
    return sorted(k for k in client.scan_iter(match=f"qa:{{{cache}}}:*")
                  if not (k.endswith(":gen") if isinstance(k, str) else k.endswith(b":gen")))


def test_miss_then_hit_returns_the_backend_answer_and_stores_a_string(r, cache):
    q = "What is our refund policy?"
    before = qa_info(r)
    first = r.execute_command("QA.GET", cache, q)
    mid = qa_info(r)
    second = r.execute_command("QA.GET", cache, q)
    after = qa_info(r)

    assert first == answer_for(q)
    assert second == first
    d1, d2 = delta(before, mid), delta(mid, after)
    assert (d1["misses"], d1["backend_calls"], d1["hits"]) == (1, 1, 0), d1
    assert (d2["misses"], d2["backend_calls"], d2["hits"]) == (0, 0, 1), d2

    # One native string, readable with plain commands: qa:{<cache>}:<32 hex>.
    keys = entry_keys(r, cache)
    assert len(keys) == 1, keys
    key = keys[0]
    prefix = f"qa:{{{cache}}}:"
    assert key.startswith(prefix)
    digest = key[len(prefix):]
    assert len(digest) == 32 and all(c in "0123456789abcdef" for c in digest), key
    assert r.type(key) == "string"
    # A text header line, the question, the answer (docs/entry-format.md).
    header, question, answer = r.get(key).split("\n", 2)
    words = header.split(" ")
    assert words[0] == "qa2", header
    h = dict(w.split("=", 1) for w in words[1:])
    assert list(h) == ["c", "f", "i", "o", "l", "m", "q", "a", "s"], header
    assert (question, answer) == (q, first)
    assert (int(h["q"]), int(h["a"]), h["s"]) == (len(q), len(first), "0")
    assert h["m"] == MODEL
    assert int(h["c"]) > 0
    assert r.ttl(key) > 0
    # QA.ENTRY shows it whole: a map (RESP3), or a flat array of pairs (RESP2).
    e = r.execute_command("QA.ENTRY", cache, q)
    if not isinstance(e, dict):
        e = dict(zip(e[::2], e[1::2]))
    assert (e["answer"], e["question"], e["model"], e["format"]) == (first, q, MODEL, 2), e


def test_normalized_variants_hit_the_same_entry(r, cache):
    q = "What is our refund policy?"
    expected = answer_for(q)
    assert r.execute_command("QA.GET", cache, q) == expected
    before = qa_info(r)
    for variant in (
        " what is our REFUND policy ",
        "What is our refund policy\uff1f",  # full-width question mark
        "WHAT   IS OUR REFUND POLICY?",
    ):
        assert r.execute_command("QA.GET", cache, variant) == expected, variant
    d = delta(before, qa_info(r))
    assert (d["hits"], d["misses"], d["backend_calls"]) == (3, 0, 0), d
    assert len(entry_keys(r, cache)) == 1

    # Control: a different question is a different entry.
    other = "What is our shipping policy?"
    assert r.execute_command("QA.GET", cache, other) == answer_for(other)
    assert qa_info(r)["backend_calls"] == before["backend_calls"] + 1
    assert len(entry_keys(r, cache)) == 2


def test_model_system_and_ttl_options(r, cache):
    q = "Which plans do you offer?"
    assert r.execute_command("QA.GET", cache, q, "MODEL", "llama3") == answer_for(q, "llama3")
    assert r.execute_command("QA.GET", cache, q, "SYSTEM", "Be brief") == answer_for(
        q, MODEL, "Be brief"
    )
    # Lowercase option names; TTL applies to the stored key.
    assert r.execute_command("QA.GET", cache, q, "ttl", "100") == answer_for(q)
    keys = entry_keys(r, cache)
    assert len(keys) == 3, keys  # model and system prompt are part of the key
    ttls = sorted(r.ttl(k) for k in keys)
    assert 0 < ttls[0] <= 100, ttls


def test_resp3_returns_the_same_answer_as_str(port, cache):
    q = "Do you ship to Canada?"
    r3 = redis.Redis(
        host=HOST,
        port=port,
        protocol=3,
        decode_responses=True,
        socket_timeout=SOCKET_TIMEOUT,
    )
    try:
        assert r3.execute_command("HELLO")["proto"] == 3
        miss = r3.execute_command("QA.GET", cache, q)
        hit = r3.execute_command("QA.GET", cache, q)
        assert isinstance(miss, str) and isinstance(hit, str)
        assert miss == hit == answer_for(q)
        # RESP3 map reply for the whole entry.
        e = r3.execute_command("QA.ENTRY", cache, q)
        assert isinstance(e, dict) and e["answer"] == miss and e["format"] == 2, e
        with pytest.raises(redis.ResponseError) as e:
            r3.execute_command("QA.GET", cache, "   ")
        assert str(e.value) == "question is empty"
    finally:
        r3.close()

    # Without decode_responses the answer is the same UTF-8 bytes, over RESP2 and RESP3.
    for proto in (2, 3):
        rb = redis.Redis(host=HOST, port=port, protocol=proto, socket_timeout=SOCKET_TIMEOUT)
        try:
            assert rb.execute_command("QA.GET", cache, q) == answer_for(q).encode()
        finally:
            rb.close()


def test_non_ascii_question_round_trips(r, cache):
    q = "¿Cuál es la política de reembolso? 返金ポリシーは？"
    assert r.execute_command("QA.GET", cache, q) == answer_for(q)
    before = qa_info(r)
    assert r.execute_command("QA.GET", cache, q) == answer_for(q)
    assert delta(before, qa_info(r))["hits"] == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["faq", ""], "question is empty"),
        (["faq", " \t "], "question is empty"),
        (["", "hello"], "cache name is empty"),
        (["a{b}", "hello"], "cache name must not contain '{' or '}'"),
        (["faq", "hello", "TTL", "0"], "TTL must be an integer between 1 and 315360000 seconds"),
        (["faq", "hello", "TTL", "abc"], "TTL must be an integer between 1 and 315360000 seconds"),
        (["faq", "hello", "TTL"], "option needs a value"),
        (["faq", "hello", "BOGUS", "1"], "unknown option (expected TTL, STALE, MODEL, SYSTEM, CONTEXT, SOURCES, REFRESH, WITHMETA, SEMANTIC or EXACT)"),
        (["faq", "hello", "REFRESH", "REFRESH"], "option given twice"),
    ],
)
def test_error_replies_raise_response_error_with_the_exact_message(r, args, message):
    before = qa_info(r)
    with pytest.raises(redis.ResponseError) as e:
        r.execute_command("QA.GET", *args)
    # redis-py strips the "ERR " code from the message.
    assert type(e.value) is redis.ResponseError
    assert str(e.value) == message
    d = delta(before, qa_info(r))
    assert d["backend_calls"] == 0 and d["misses"] == 0, d


def test_wrong_arity_is_a_redis_error(r):
    with pytest.raises(redis.ResponseError) as e:
        r.execute_command("QA.GET", "faq")
    assert "wrong number of arguments" in str(e.value).lower()


def test_pipeline_of_hits(r, cache):
    questions = [f"Pipeline question number {i}?" for i in range(10)]
    for q in questions:
        assert r.execute_command("QA.GET", cache, q) == answer_for(q)
    before = qa_info(r)

    pipe = r.pipeline(transaction=False)
    for q in questions:
        pipe.execute_command("QA.GET", cache, q.upper())  # normalized: still hits
    assert pipe.execute() == [answer_for(q) for q in questions]

    # Hits never block, so they also work inside MULTI/EXEC.
    tx = r.pipeline(transaction=True)
    for q in questions:
        tx.execute_command("QA.GET", cache, q)
    assert tx.execute() == [answer_for(q) for q in questions]

    d = delta(before, qa_info(r))
    assert (d["hits"], d["misses"], d["backend_calls"]) == (20, 0, 0), d


def test_miss_inside_multi_is_an_error_not_a_hang(r, cache):
    hit_q, miss_q = "Is this cached?", "Is this one cached too?"
    assert r.execute_command("QA.GET", cache, hit_q) == answer_for(hit_q)
    before = qa_info(r)
    tx = r.pipeline(transaction=True)
    tx.execute_command("QA.GET", cache, hit_q)
    tx.execute_command("QA.GET", cache, miss_q)
    res = tx.execute(raise_on_error=False)
    assert res[0] == answer_for(hit_q)
    assert isinstance(res[1], redis.ResponseError), res
    assert str(res[1]) == (
        "cache miss inside MULTI or a script: QA.GET cannot wait for the backend there"
    )
    assert delta(before, qa_info(r))["backend_calls"] == 0
    # Nothing was stored for the refused miss; outside MULTI it is an ordinary miss.
    assert len(entry_keys(r, cache)) == 1
    assert r.execute_command("QA.GET", cache, miss_q) == answer_for(miss_q)


def test_asyncio_concurrent_identical_misses_call_the_backend_once(port, cache):
    q = f"What changed in release {uuid.uuid4().hex[:8]}?"
    n = 20

    async def main():
        client = redis.asyncio.Redis(
            host=HOST,
            port=port,
            decode_responses=True,
            socket_timeout=SOCKET_TIMEOUT,
            max_connections=n,
        )
        try:
            # Open the n connections first, so the n QA.GETs leave together.
            assert await asyncio.gather(*(client.ping() for _ in range(n))) == [True] * n
            before = qa_info_sync(port)
            replies = await asyncio.gather(
                *(client.execute_command("QA.GET", cache, q) for _ in range(n))
            )
            after = qa_info_sync(port)
            # And a hit through the same async client.
            hit = await client.execute_command("QA.GET", cache, q)
            return before, replies, after, hit
        finally:
            await client.aclose()

    before, replies, after, hit = asyncio.run(main())
    assert replies == [answer_for(q)] * n
    assert hit == answer_for(q)
    d = delta(before, after)
    assert d["backend_calls"] == 1, d
    # Every caller missed (the backend takes longer than sending n commands); all but the
    # leader joined its flight.
    assert (d["misses"], d["coalesced"], d["hits"]) == (n, n - 1, 0), d


def test_asyncio_resp3_and_errors(port, cache):
    q = "Can I pay by invoice?"

    async def main():
        client = redis.asyncio.Redis(
            host=HOST,
            port=port,
            protocol=3,
            decode_responses=True,
            socket_timeout=SOCKET_TIMEOUT,
        )
        try:
            a = await client.execute_command("QA.GET", cache, q)
            b = await client.execute_command("QA.GET", cache, "  can i PAY by invoice ")
            with pytest.raises(redis.ResponseError) as e:
                await client.execute_command("QA.GET", cache, "")
            return a, b, str(e.value)
        finally:
            await client.aclose()

    a, b, err = asyncio.run(main())
    assert a == b == answer_for(q)
    assert err == "question is empty"


def qa_info_sync(port):
    c = redis.Redis(host=HOST, port=port, decode_responses=True, socket_timeout=SOCKET_TIMEOUT)
    try:
        return qa_info(c)
    finally:
        c.close()
