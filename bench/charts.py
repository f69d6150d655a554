"""PNG charts of a run's results (matplotlib, Agg). Each chart is drawn only when its section ran;
without matplotlib nothing is drawn and the report says so."""

import os
import statistics


def med(values):
    return statistics.median(values) if values else float("nan")


def pct(values, p):
    """Nearest-rank percentile, as in bench.py."""
    v = sorted(values)
    if not v:
        return float("nan")
    k = max(0, min(len(v) - 1, int(round(p / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


def available():
    try:
        import matplotlib  # noqa: F401
        return True
    except Exception:
        return False


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False})
    return plt


GET_C, QA_C, QA2_C = "#7f7f7f", "#d62728", "#ff9896"


def _label_bars(ax, bars, fmt):
    for b in bars:
        h = b.get_height()
        ax.annotate(fmt.format(h), (b.get_x() + b.get_width() / 2, h), ha="center", va="bottom",
                    fontsize=7, xytext=(0, 2), textcoords="offset points")


def hit(h, path):
    plt = _plt()
    res = h["res"]
    # GET, QA.GET and the non-ASCII question: the sides measured at both pipelines.
    sides = [name for name, ps in h["sides"] if tuple(ps) == (1, 16)][:3]
    colors = [GET_C, QA_C, QA2_C]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    width = 0.26
    for j, name in enumerate(sides):
        xs = [i + (j - 1) * width for i in range(2)]
        rps = [med([m["rps"] for m in res[(name, p)]]) / 1e3 for p in (1, 16)]
        bars = axes[0].bar(xs, rps, width, label=name, color=colors[j])
        _label_bars(axes[0], bars, "{:.0f}k")
        us = [med([m["usec_per_call"] for m in res[(name, p)]]) for p in (1, 16)]
        bars = axes[1].bar(xs, us, width, label=name, color=colors[j])
        _label_bars(axes[1], bars, "{:.2f}")
    for ax in axes:
        ax.set_xticks([0, 1])
        ax.set_xticklabels(["pipeline 1", "pipeline 16"])
    axes[0].set_ylabel("thousand requests / s (median)")
    axes[0].set_title("Hit throughput, 50 clients, 500-byte value")
    axes[1].set_ylabel("server µs per call (INFO commandstats)")
    axes[1].set_title("Server time per call")
    axes[0].legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ping(rs, path):
    plt = _plt()
    rows = [("idle", rs["idle"])] + [(key, rs["loaded"][key]) for key, _ in rs["variants"]]
    names = {"idle": "idle", "shared": "500 misses waiting,\nworkers on the server core",
             "apart": "500 misses waiting,\nworkers on the other core"}
    fig, ax = plt.subplots(figsize=(7, 3.4))
    width = 0.38
    for j, (p, color) in enumerate(((50, GET_C), (99, QA_C))):
        vals = [med([pct(w["lat"], p) for w in ws]) for _, ws in rows]
        bars = ax.bar([i + (j - 0.5) * width for i in range(len(rows))], vals, width,
                      label=f"p{p}", color=color)
        _label_bars(ax, bars, "{:.0f}")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([names.get(k, k) for k, _ in rows])
    ax.set_ylabel("PING latency, µs (median over windows)")
    ax.set_title("Redis stays responsive while misses wait on a 2 s backend")
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def scale(rows, path):
    plt = _plt()
    sizes = [r["size"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    axes[0].plot(sizes, [r["q16"] for r in rows], "o-", color=QA_C, label="QA.GET hit (random entry)")
    axes[0].plot(sizes, [r["g16"] for r in rows], "o-", color=GET_C, label="GET (random plain key)")
    axes[0].plot(sizes, [r["qhot"] for r in rows], "s--", color=QA2_C, label="QA.GET hit (one hot entry)")
    axes[0].plot(sizes, [r["ghot"] for r in rows], "s--", color="#bbbbbb", label="GET (one hot key)")
    axes[0].set_ylabel("server µs per call (pipeline 16)")
    axes[0].set_title("Server time per hit vs number of entries")
    axes[1].plot(sizes, [r["qc1"] for r in rows], "o-", color=QA_C, label="QA.GET hit")
    axes[1].plot(sizes, [r["gc1"] for r in rows], "o-", color=GET_C, label="GET")
    axes[1].set_ylabel("p50 µs, one client (redis-benchmark -c 1)")
    axes[1].set_title("Single-client latency vs number of entries")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(sizes)
        ax.set_xticklabels([f"{s:,}" for s in sizes])
        ax.set_ylim(bottom=0)
        ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def client(cw, path):
    plt = _plt()
    s = cw["sides"]
    labels = ["client-side:\nmd5(q.lower()) + GET/SETEX", "QA.GET"]
    keys = ["app", "qa"]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.3))
    width = 0.38
    for j, (p, color) in enumerate(((50, GET_C), (99, QA_C))):
        vals = [pct(s[k]["hit"], p) for k in keys]
        bars = axes[0].bar([i + (j - 0.5) * width for i in range(2)], vals, width, label=f"p{p}", color=color)
        _label_bars(axes[0], bars, "{:.0f}")
    axes[0].set_ylabel("hit latency from redis-py, µs")
    axes[0].set_title("Hit latency")
    axes[0].legend(frameon=False, fontsize=8)
    bars = axes[1].bar(range(2), [s[k]["calls"] for k in keys], 0.6, color=[GET_C, QA_C])
    _label_bars(axes[1], bars, "{:,.0f}")
    axes[1].set_title(f"Backend calls for {cw['n']:,} questions")
    bars = axes[2].bar(range(2), [100 * len(s[k]["hit"]) / cw["n"] for k in keys], 0.6, color=[GET_C, QA_C])
    _label_bars(axes[2], bars, "{:.1f}%")
    axes[2].set_title("Hit rate (30% of the questions repeat)")
    for ax in axes:
        ax.set_xticks(range(2))
        ax.set_xticklabels(labels, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def stampede(qa_runs, app_runs, path):
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    labels = ["client-side way", "QA.GET"]
    calls = [med([r["backend_calls"] for r in app_runs]), med([r["backend_calls"] for r in qa_runs])]
    secs = [med([r["total_s"] for r in app_runs]), med([r["total_s"] for r in qa_runs])]
    bars = axes[0].bar(range(2), calls, 0.6, color=[GET_C, QA_C])
    _label_bars(axes[0], bars, "{:,.0f}")
    axes[0].set_title("Backend calls, 1000 identical concurrent misses")
    bars = axes[1].bar(range(2), secs, 0.6, color=[GET_C, QA_C])
    _label_bars(axes[1], bars, "{:.2f} s")
    axes[1].set_title("Until all 1000 are answered (1 s backend)")
    for ax in axes:
        ax.set_xticks(range(2))
        ax.set_xticklabels(labels)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def memory(m, path):
    plt = _plt()
    rows = m["rows"]
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    vals = [r["per_entry"] for r in rows]
    names = [f"{'SETEX' if i % 2 == 0 else 'QA.SET entry'}\n{r['size']:,}-byte answer" for i, r in enumerate(rows)]
    bars = ax.bar(range(len(rows)), vals, 0.6, color=[GET_C, QA_C] * (len(rows) // 2))
    _label_bars(ax, bars, "{:,.0f} B")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(names)
    ax.set_ylabel("used_memory per entry, bytes")
    ax.set_title(f"Memory per entry, {m['n']:,} entries")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw(results, out_dir, log):
    """Draws what it can; returns {section: (file name, alt text)}."""
    if not available():
        log("charts: matplotlib is not installed, no charts drawn")
        return None
    made = {}
    todo = []
    if "hit" in results:
        todo.append(("hit", "bench-hit.png", "hit throughput and server time, QA.GET vs GET",
                     lambda p: hit(results["hit"], p)))
    if "resp" in results:
        todo.append(("resp", "bench-ping.png", "PING latency idle vs while 500 misses wait",
                     lambda p: ping(results["resp"], p)))
    if "stampede" in results and results["stampede"].get("app_runs"):
        todo.append(("stampede", "bench-stampede.png", "stampede: backend calls and time, QA.GET vs client-side",
                     lambda p: stampede(results["stampede"]["runs"], results["stampede"]["app_runs"], p)))
    if "client" in results:
        todo.append(("client", "bench-client.png", "client-side way vs QA.GET: hit latency, backend calls, hit rate",
                     lambda p: client(results["client"], p)))
    if "memory" in results:
        todo.append(("memory", "bench-memory.png", "bytes per entry, QA.SET vs SETEX",
                     lambda p: memory(results["memory"], p)))
    if "scale" in results and results["scale"].get("summary"):
        todo.append(("scale", "bench-scale.png", "hit time vs number of entries",
                     lambda p: scale(results["scale"]["summary"]["rows"], p)))
    for key, name, alt, fn in todo:
        try:
            fn(os.path.join(out_dir, name))
            made[key] = (name, alt)
        except Exception as e:  # a chart never fails the run
            log(f"charts: {name} failed: {type(e).__name__}: {e}")
    log(f"charts: {', '.join(n for n, _ in made.values()) or 'none'} in {out_dir}")
    return made
