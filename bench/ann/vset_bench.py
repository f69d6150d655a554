"""Redis 8's native vector sets (VADD / VSIM) on the semantic tier's workload, for the question
"could they replace the module's index?" (issue #16, docs/semantic.md).

Starts its own Redis 8 (`--server`, default target/servers/bin/redis-server-8 as unpacked by
scripts/newer-servers.sh) on a free loopback port, adds N random unit vectors of 384 dimensions
(seeded) with VADD in each quantization (Q8, the default; NOQUANT: float32), then asks Q queries,
half near duplicates of stored vectors (cosine about 0.95) and half fresh directions, with VSIM
COUNT 10, one client, one query at a time. Measures: add rate (pipelined, one connection),
bytes per vector (used_memory growth), VSIM round trip p50/p99 and server µs per call
(commandstats), recall@1 (near duplicates and all) and recall@10 against an exact scan in numpy,
the largest error of the similarity VSIM reports, VREM of a tenth, and the time to load the
set back from an RDB after a restart.

    bench/.venv/bin/python bench/ann/vset_bench.py --n 100000 --queries 1000
Traffic to 127.0.0.1 only; stops only the server it started.
"""

import argparse
import os
import socket
import subprocess
import tempfile
import time

import numpy as np
import redis

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start(server, work, limit_s=600):
    """Starts a server on `work` (loading the RDB there, if any) and waits until it answers
    with its data loaded."""
    port = free_port()
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--dir", work,
                             "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = redis.Redis(port=port, socket_timeout=600)
    deadline = time.time() + limit_s
    while True:
        try:
            if r.ping() and int(r.info("persistence").get("loading", 0)) == 0:
                return proc, r
        except Exception:
            pass
        if time.time() > deadline:
            proc.kill()
            raise RuntimeError("redis-server did not start (or load its RDB)")
        time.sleep(0.05)


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def used(r):
    return int(r.info("memory")["used_memory"])


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def run(server, n, nq, quant, dims, seed):
    rng = np.random.default_rng(seed)
    base = unit(rng.standard_normal((n, dims)))
    half = nq // 2
    picks = rng.choice(n, half, replace=False)
    # Noise of 0.0168 per dimension: cosine about 1 / sqrt(1 + 384 * 0.0168^2) = 0.95.
    near = unit(base[picks] + 0.0168 * rng.standard_normal((half, dims)))
    fresh = unit(rng.standard_normal((nq - half, dims)))
    queries = np.vstack([near, fresh])
    exact = queries @ base.T
    top10 = np.argsort(-exact, axis=1)[:, :10]

    work = tempfile.mkdtemp(prefix="qa-vset-")
    proc, r = start(server, work)
    try:
        m0 = used(r)
        r.config_resetstat()
        t0 = time.perf_counter()
        batch = 1000
        for s in range(0, n, batch):
            p = r.pipeline(transaction=False)
            for i in range(s, min(n, s + batch)):
                p.execute_command("VADD", "v", "FP32", base[i].tobytes(), str(i), quant)
            p.execute()
        add_s = time.perf_counter() - t0
        per_vec = (used(r) - m0) / n
        stats = r.info("commandstats")
        add_us = float(stats.get("cmdstat_VADD", stats.get("cmdstat_vadd", {})).get("usec_per_call", "nan"))
        r.config_resetstat()
        lat, got1, got10, err = [], [], [], 0.0
        for qi in range(nq):
            t = time.perf_counter()
            res = r.execute_command("VSIM", "v", "FP32", queries[qi].tobytes(), "COUNT", 10, "WITHSCORES")
            lat.append((time.perf_counter() - t) * 1e6)
            # redis-py may give {element: score} (in the reply's order) or a flat list.
            pairs = list(res.items()) if isinstance(res, dict) else list(zip(res[::2], res[1::2]))
            ids = [int(e) for e, _ in pairs]
            # VSIM's score is (1 + cosine) / 2.
            for e, score in pairs:
                cos = 2 * float(score) - 1
                err = max(err, abs(cos - float(exact[qi, int(e)])))
            got1.append(bool(ids) and ids[0] == top10[qi, 0])
            got10.append(len(set(ids) & set(top10[qi].tolist())) / 10)
        stats = r.info("commandstats")
        cs = stats.get("cmdstat_VSIM", stats.get("cmdstat_vsim", {}))
        # Deletes: every tenth vector.
        t0 = time.perf_counter()
        p = r.pipeline(transaction=False)
        for i in range(0, n, 10):
            p.execute_command("VREM", "v", str(i))
        p.execute()
        rem_us = (time.perf_counter() - t0) / (n // 10) * 1e6
        # Restart: the set is loaded back from the RDB (the graph is saved, not rebuilt).
        t0 = time.perf_counter()
        r.execute_command("SAVE")
        save_s = time.perf_counter() - t0
        r.shutdown(nosave=True)
        proc.wait(60)
        t0 = time.perf_counter()
        proc, r = start(server, work)
        load_s = time.perf_counter() - t0
        card = int(r.execute_command("VCARD", "v"))
    finally:
        try:
            r.shutdown(nosave=True)
        except Exception:
            pass
        proc.wait(60)
    return {
        "quant": quant, "n": n, "add_per_s": n / add_s, "add_us": add_us, "bytes_per_vector": per_vec,
        "p50_us": pct(lat, 50), "p99_us": pct(lat, 99),
        "server_us": float(cs.get("usec_per_call", "nan")),
        "recall1_near": float(np.mean(got1[:half])), "recall1_all": float(np.mean(got1)),
        "recall10": float(np.mean(got10)), "max_sim_err": err, "vrem_us": rem_us,
        "save_s": save_s, "load_s": load_s, "card_after_restart": card,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", default=os.path.join(ROOT, "target/servers/bin/redis-server-8"))
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--dims", type=int, default=384)
    ap.add_argument("--quant", default="Q8,NOQUANT")
    ap.add_argument("--seed", type=int, default=16)
    a = ap.parse_args()
    print(f"Redis 8 vector sets: {a.n:,} random unit vectors of {a.dims} dimensions, {a.queries} queries "
          f"(half near duplicates), VSIM COUNT 10 from one client\n")
    print("| quantization | VADD/s (pipelined) | server µs / VADD | bytes / vector | VSIM p50 / p99 µs (round trip) | "
          "server µs / VSIM | recall@1 near dup. / all | recall@10 | largest similarity error | "
          "VREM µs | SAVE s | load after restart s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for quant in a.quant.split(","):
        m = run(a.server, a.n, a.queries, quant, a.dims, a.seed)
        print(f"| {quant} | {m['add_per_s']:,.0f} | {m['add_us']:,.0f} | {m['bytes_per_vector']:,.0f} | {m['p50_us']:,.0f} / "
              f"{m['p99_us']:,.0f} | {m['server_us']:,.0f} | {m['recall1_near']:.3f} / {m['recall1_all']:.3f} | "
              f"{m['recall10']:.3f} | {m['max_sim_err']:.4f} | {m['vrem_us']:.1f} | {m['save_s']:.1f} | "
              f"{m['load_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
