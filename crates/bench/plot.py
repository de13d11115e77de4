"""Plot wall time against N for every peer from speed.csv (written by pause-ledger-bench).

Usage: plot.py RESULTS_DIR  → RESULTS_DIR/restore-wall-time.png
Median of the timing runs, bars from min to max.
"""
import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

out = Path(sys.argv[1])
runs = defaultdict(list)
labels = {}
with open(out / "speed.csv", newline="") as f:
    for row in csv.DictReader(f):
        if row["via_proxy"] == "true":
            continue
        key = row["peer"]
        labels[key] = row["label"]
        runs[key].append((int(row["n"]), float(row["wall_ms"])))

fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
markers = "os^vDP*"
for i, key in enumerate(sorted(runs)):
    by_n = defaultdict(list)
    for n, ms in runs[key]:
        by_n[n].append(ms / 1000.0)
    ns = sorted(by_n)
    med = [statistics.median(by_n[n]) for n in ns]
    lo = [m - min(by_n[n]) for m, n in zip(med, ns)]
    hi = [max(by_n[n]) - m for m, n in zip(med, ns)]
    ax.errorbar(ns, med, yerr=[lo, hi], marker=markers[i % len(markers)], capsize=3,
                linestyle="--" if key[:2] in ("e-", "f-") else "-", label=labels[key])
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("N paused ManagedCharts restored")
ax.set_ylabel("wall time, s (median, bars min–max)")
ax.set_title("Restoring N paused ManagedCharts on a local kube-apiserver (2 cores)")
ax.grid(True, which="both", alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(out / "restore-wall-time.png")
print(f"plot: {out / 'restore-wall-time.png'}")
