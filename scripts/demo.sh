#!/usr/bin/env bash
# make demo: a short scripted session on a redis-server of its own (free 127.0.0.1 port, the
# module loaded) with the bundled demo backend (an OpenAI-compatible server answering after
# QA_DEMO_DELAY_MS, 2000 by default). Prints, per question, whether it was a hit or a miss and
# its latency, then QA.STATS. Stops only the two processes it started.
set -euo pipefail
cd "$(dirname "$0")/.."

delay_ms="${QA_DEMO_DELAY_MS:-2000}"
target="$(realpath -m "${CARGO_TARGET_DIR:-target}")/release"
"${CARGO:-cargo}" build --release --quiet --lib --example demo_backend
module="$target/libredis_qa.so"
backend_bin="$target/examples/demo_backend"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

work="$(mktemp -d /tmp/redis-qa-demo.XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bport="$(free_port)"
"$backend_bin" "127.0.0.1:$bport" "$delay_ms" >"$work/backend.log" 2>&1 &
pids+=("$!")
rport="$(free_port)"
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
  --logfile "$work/redis.log" --loadmodule "$module" \
  --qa.backend-url "http://127.0.0.1:$bport/v1" \
  --qa.price-input-per-mtok 2.50 --qa.price-output-per-mtok 10 &
pids+=("$!")

python3 - "$rport" "$bport" "$delay_ms" "$work" <<'PY'
import socket
import sys
import time

rport, bport, delay_ms, work = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]


class Conn:
    """A minimal RESP2 client (no dependency): one request, one reply."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.s.makefile("rb")

    def call(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.s.sendall(b"".join(out))
        return self.read()

    def read(self):
        line = self.f.readline()
        if not line:
            raise ConnectionError("connection closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data.decode()
        if kind == b"*":
            return [self.read() for _ in range(int(rest))]
        raise RuntimeError(f"unexpected reply {line!r}")


def wait_up(what, check, seconds=20):
    deadline = time.monotonic() + seconds
    while True:
        try:
            return check()
        except (OSError, RuntimeError):
            if time.monotonic() > deadline:
                sys.exit(f"{what} did not start; see {work}")
            time.sleep(0.05)


r = wait_up("redis-server", lambda: Conn(rport) if Conn(rport).call("PING") == "PONG" else None)
wait_up("demo backend", lambda: socket.create_connection(("127.0.0.1", bport), 1).close())

QUESTIONS = [
    "What is our refund policy?",
    "what is our REFUND policy",
    "  What is our refund policy?!",
    "Do you ship to Canada?",
    "do you ship to canada",
    "DO YOU SHIP TO CANADA???",
    "What is our refund policy.",
]


def fmt(seconds):
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1e3:.3f} ms"


print(f"redis-qa demo: redis-server on 127.0.0.1:{rport} with the module; the demo backend on "
      f"127.0.0.1:{bport} answers after {delay_ms / 1000:g} s.\n")
print(f"  {'#':>2}  {'QA.GET faq <question>':<34} {'served':<7} {'latency':>10}   answer")
print(f"  {'-' * 2}  {'-' * 34} {'-' * 7} {'-' * 10}   {'-' * 57}")
times = {"miss": [], "hit": []}
for i, q in enumerate(QUESTIONS, 1):
    t0 = time.perf_counter()
    reply = r.call("QA.GET", "faq", q, "WITHMETA")
    dt = time.perf_counter() - t0
    meta = dict(zip(reply[::2], reply[1::2]))
    served = meta["served"]
    times.setdefault(served, []).append(dt)
    answer = meta["answer"]
    answer = answer if len(answer) <= 64 else answer[:61] + "..."
    print(f"  {i:>2}  {repr(q):<34} {served:<7} {fmt(dt):>10}   {answer}")

stats = r.call("QA.STATS", "faq")
print("\nQA.STATS faq")
for k, v in zip(stats[::2], stats[1::2]):
    print(f"  {k:<18} {v}")
if times["miss"] and times["hit"]:
    miss = sum(times["miss"]) / len(times["miss"])
    hits = sorted(times["hit"])
    hit = hits[len(hits) // 2]
    print(f"\nA miss took {fmt(miss)} (the backend), a hit {fmt(hit)} (median of {len(hits)}): "
          f"{miss / hit:,.0f}x faster, for every spelling of the same question.")

# QA.STREAM: a miss read as the model writes it (the demo backend streams one word every
# 200 ms after 300 ms), then the same question again: a hit, whole.
q = "How do streamed answers work?"
print(f"\nQA.STREAM faq {q!r}: the answer as it is written (XREAD BLOCK on the stream), then "
      "the same question again")
for attempt in range(2):
    t0 = time.perf_counter()
    reply = dict(zip(*[iter(r.call("QA.STREAM", "faq", q))] * 2))
    print(f"  {reply['served']:<5} ", end="", flush=True)
    first = None
    if "answer" in reply:
        first = time.perf_counter() - t0
        print(reply["answer"], end="")
    else:
        key, last, done = reply["stream"], "0", False
        while not done:
            for _, entries in r.call("XREAD", "BLOCK", 5000, "STREAMS", key, last) or []:
                for last, flat in entries:
                    f = dict(zip(flat[::2], flat[1::2]))
                    if "error" in f:
                        sys.exit(f["error"])
                    done = "end" in f
                    if "text" in f:
                        first = first or time.perf_counter() - t0
                        print(f["text"], end="", flush=True)
    print(f"\n        first words after {fmt(first)}, whole answer after "
          f"{fmt(time.perf_counter() - t0)}")
PY
