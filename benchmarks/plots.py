"""Scaling curves of a benchmark run (PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def plot(rows: Sequence[dict[str, Any]], path: str) -> None:
    """Scaling curves: env steps/s vs envs, throughput vs devices (PNG, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if r["section"] == "env" and r["unit"] == "1/s":
            c = r["config"]
            kind = "alpha-only" if "alpha-only" in r["item"] else "full episodes"
            series.setdefault(f"{c['path']} {kind}", []).append(
                (c["num_envs"], r["value"])
            )
    for label, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="lockstep envs",
        ylabel="env steps/s",
        title="env throughput vs number of envs",
    )
    if series:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "section 'env' not run", ha="center", transform=ax.transAxes)
    ax.grid(True, which="both", alpha=0.3)

    ax = axes[1]
    dev: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if r["section"] == "devices" and r["unit"] == "1/s":
            label = r["item"].rsplit(" ", 3)[0]
            dev.setdefault(label, []).append((r["config"]["devices"], r["value"]))
    for label, pts in sorted(dev.items()):
        pts.sort()
        base = pts[0][1]
        ax.plot([p[0] for p in pts], [p[1] / base for p in pts], "o-", label=label)
    ax.set(
        xlabel="devices",
        ylabel="throughput / 1-device throughput",
        title="sharding: throughput vs devices",
    )
    if dev:
        ax.legend(fontsize=8)
    else:
        ax.text(
            0.5, 0.5, "section 'devices' not run", ha="center", transform=ax.transAxes
        )
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
