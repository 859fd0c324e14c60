#!/usr/bin/env python3
"""Plots clawbus-bench's JSON: latency percentiles against offered rate,
clawbus next to raw JetStream, one panel per nats-server sync setting.

Usage: plot_bench.py [results.json] [latency.png]
(defaults: target/bench/results.json, target/bench/latency.png);
plot_bench.py --check only checks that matplotlib imports.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402

PERCENTILES = [("p50_ms", "p50", "tab:blue"), ("p90_ms", "p90", "tab:orange"), ("p99_ms", "p99", "tab:red")]
SIDES = [("clawbus", "clawbus (HTTP send → wake)", "-", "o"), ("raw", "raw JetStream (publish → receipt)", "--", "s")]


def open_loop_steps(mode, side):
    """Fixed-rate steps and search probes of one side, by offered rate."""
    steps = [s for s in mode["steps"] if s["side"] == side and s["kind"] in ("fixed", "probe") and s["latency"]]
    return sorted(steps, key=lambda s: s["offered_rate"])


def panel(axes, mode, limit_ms):
    for side, label, style, marker in SIDES:
        steps = open_loop_steps(mode, side)
        rates = [s["offered_rate"] for s in steps]
        for key, name, colour in PERCENTILES:
            values = [s["latency"][key] for s in steps]
            axes.plot(rates, values, style, color=colour, marker=marker, markersize=4, label=f"{name} {label}")
        # Not sustained (saturated, lost or late): circled.
        bad = [s for s in steps if not s["sustained"]]
        axes.scatter([s["offered_rate"] for s in bad], [s["latency"]["p99_ms"] for s in bad],
                     s=90, facecolors="none", edgecolors="black", linewidths=0.8)
    axes.axhline(limit_ms, color="grey", linestyle=":", linewidth=1)
    axes.annotate(f"p99 limit {limit_ms:g} ms", (0.01, limit_ms), xycoords=("axes fraction", "data"),
                  fontsize=8, color="grey", va="bottom")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("offered rate, messages per second")
    axes.set_ylabel("latency, ms")
    axes.set_title(f"sync_interval: {mode['sync_interval']}")
    axes.grid(True, which="both", alpha=0.25)


def main():
    if sys.argv[1:] == ["--check"]:
        return
    source = sys.argv[1] if len(sys.argv) > 1 else "target/bench/results.json"
    target = sys.argv[2] if len(sys.argv) > 2 else "target/bench/latency.png"
    with open(source) as f:
        report = json.load(f)
    modes = report["modes"]
    figure, panels = plt.subplots(1, len(modes), figsize=(8 * len(modes), 5.5), squeeze=False)
    for axes, mode in zip(panels[0], modes):
        panel(axes, mode, report["settings"]["p99_limit"] * 1e3)
    panels[0][0].legend(fontsize=7, loc="upper left")
    machine = report["machine"]
    settings = report["settings"]
    figure.suptitle(
        f"clawbus send-to-wake latency vs raw JetStream publish-to-receipt\n"
        f"{settings['agents']} agents on {settings['adapters']} adapters, {settings['step']:g} s per rate; "
        f"{machine['cpus']} x {machine['cpu_model']}, {machine['nats_server']}; circled: not sustained",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(target, dpi=120)
    print(f"plot: {target}")


if __name__ == "__main__":
    main()
