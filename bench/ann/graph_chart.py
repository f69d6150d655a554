"""Draws the figures of one or more `graph_bench.py` runs (their markdown output) against issue
#16's targets: search p99 (graph complete, during 2,000 inserts/s, after a restart), bytes per
entry (the index plus the entry's f16 copy of the vector), and the restart (every entry
searchable, graph complete).

    bench/.venv/bin/python bench/ann/graph_chart.py run-100k.md [run-300k.md ...] --png docs/semantic-graph.png
Needs matplotlib.
"""

import argparse
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# The entry's `sem` part at 384 dimensions: `qav2`, a 16-byte scope digest, 2-byte length,
# 384 f16 values (docs/entry-format.md).
SEM_F16 = 790


def parse(path):
    rows = {}
    entries = None
    for line in open(path, encoding="utf-8"):
        m = re.match(r"\| measured \((\d+) entries", line)
        if m:
            entries = int(m.group(1))
        m = re.match(r"\| (.+?) \| (.+?) \|$", line.strip())
        if m and not m.group(1).startswith(("measured", "---")):
            rows[m.group(1)] = m.group(2)
    if entries is None:
        raise SystemExit(f"{path}: not a graph_bench.py table")

    def pair(key, optional=False):
        if optional and key not in rows:
            return float("nan"), float("nan")  # a phase the run left out (--skip-inserts)
        a, b = rows[key].replace(",", "").split("/")
        return float(a), float(b)

    def num(key):
        return float(rows[key].replace(",", ""))

    return {
        "n": entries,
        "p99_ms": [pair("search p50 / p99, graph complete (µs, INFO)")[1] / 1000,
                   pair("inserts: search p50 / p99 meanwhile (µs, INFO)", True)[1] / 1000,
                   pair("search p50 / p99 after the restart (µs, INFO)")[1] / 1000],
        "index_b": num("index bytes per entry (INFO)"),
        "searchable_s": num("restart: every entry searchable (s)"),
        "graph_s": num("restart: graph complete (s)"),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--png", required=True)
    a = ap.parse_args()
    runs = []
    for p in a.runs:
        try:
            runs.append(parse(p))
        except KeyError as e:
            print(f"{p}: no {e} (a --fill-only run?): left out of the chart")
    if not runs:
        raise SystemExit("no complete graph_bench.py run to draw")
    runs.sort(key=lambda r: r["n"])
    labels = [f"{r['n'] // 1_000_000}M" if r["n"] % 1_000_000 == 0 else f"{r['n'] // 1000}k"
              for r in runs]
    fig, ax = plt.subplots(1, 3, figsize=(12, 3.6))
    width = 0.8 / len(runs)
    kinds = ["graph complete", "2,000 inserts/s", "after restart"]
    for j, r in enumerate(runs):
        xs = [i + (j - (len(runs) - 1) / 2) * width for i in range(3)]
        bars = ax[0].bar(xs, [0 if v != v else v for v in r["p99_ms"]], width, label=labels[j])
        ax[0].bar_label(bars, ["not run" if v != v else "%.1f" % v for v in r["p99_ms"]],
                        fontsize=7)
    ax[0].axhline(2.0, color="red", lw=1, ls="--", label="target 2 ms")
    ax[0].set_xticks(range(3), kinds, fontsize=8)
    ax[0].set_ylabel("search p99, ms (INFO)")
    ax[0].set_title("Search p99")
    ax[0].legend(fontsize=7, frameon=False)
    idx = [r["index_b"] for r in runs]
    ax[1].bar(labels, idx, 0.5, label="index (graph, f16 vectors, tables)")
    ax[1].bar(labels, [SEM_F16] * len(runs), 0.5, bottom=idx, label="entry's f16 vector")
    ax[1].axhline(1500, color="red", lw=1, ls="--", label="target 1,500 B")
    ax[1].set_ylim(0, (max(idx) + SEM_F16) * 1.45)
    ax[1].set_ylabel("bytes per entry")
    ax[1].set_title("Vectors and index per entry")
    ax[1].legend(fontsize=7, frameon=False, loc="upper left")
    for j, r in enumerate(runs):
        ax[2].bar([j - 0.18], [r["searchable_s"]], 0.35, color="C2",
                  label="every entry searchable" if j == 0 else None)
        ax[2].bar([j + 0.18], [r["graph_s"]], 0.35, color="C3",
                  label="graph complete" if j == 0 else None)
    ax[2].axhline(30, color="red", lw=1, ls="--", label="target 30 s")
    ax[2].set_yscale("log")
    ax[2].set_ylim(0.5, max(60, max(r["graph_s"] for r in runs) * 3))
    ax[2].set_xticks(range(len(runs)), labels)
    ax[2].set_ylabel("seconds after the server started (log)")
    ax[2].set_title("Restart")
    ax[2].legend(fontsize=7, frameon=False)
    fig.suptitle("Semantic index with its HNSW graph (usearch f16), 384 dimensions, one scope "
                 "(bench/ann/graph_bench.py)", fontsize=9)
    fig.tight_layout()
    fig.savefig(a.png, dpi=110)


if __name__ == "__main__":
    main()
