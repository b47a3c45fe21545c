#!/usr/bin/env python
"""Section ``agents``: does the PPO agent beat random search with the same budget?

Runs ``python -m jaxdarts.search`` twice per variant, ``--agent ppo`` and ``--agent
random``, with the same number of reward evaluations (episodes) per seed, the same
seeds (hence the same data split and supernet initialisation) and the same env and
reward, all seeds of a method in one compiled program (``seeds``). Reports per method
(mean ± std over seeds):

- ``best``: the best episode-end reward found during the search;
- ``last10``: the mean reward of the episodes that ended in the last 10% of the
  updates (at least one update), i.e. what the agent samples at the end;
- ``final``: the reward of the final genotype as the run reports it (PPO: one
  episode of the deterministic policy; random search: the best architecture seen,
  so its ``final`` equals its ``best`` and is a maximum over many noisy rewards);
- ``rescored``: the final genotype (``genotype.json``: the 8 kept edges) scored
  again by :func:`jaxdarts.scoring.score_genotypes` with the same reward kind and
  supernet size, mean over ``--rescore-seeds`` supernet initialisations and
  un-augmented validation batches: the same yardstick for both methods, free of
  the best-of-many selection bias.

Writes ``agents.json`` (settings, per-seed and summary numbers), ``agents.md`` (the
table) and ``agents.png`` (best reward so far against reward evaluations, mean ± std
band over seeds) into ``--out``, and the run folders under ``--out/runs``.

Usage::

    python benchmarks/agents.py [--quick] [--variant disc-nwot] [--seeds 3]
        [--evals N] [--out DIR] [--supernet-ckpt DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

if __package__ in (None, ""):  # run as a script: import the package from the repo root
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np

METHODS = ("ppo", "random")
NUMBERS = ("best", "last10", "final", "rescored")
#: Reward evaluations (episodes) per seed by default: about the quick preset's
#: search; the paper's 1M discrete steps are 35,714 episodes of 28 steps.
DEFAULT_EVALS = {True: 128, False: 35_714}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python benchmarks/agents.py",
        description="PPO against random search with the same number of reward "
        "evaluations (table, JSON, PNG).",
    )
    p.add_argument("--quick", action="store_true", help="--preset quick (digits)")
    p.add_argument("--variant", default="disc-nwot", help="the search variant")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (>= 1)")
    p.add_argument(
        "--evals",
        type=int,
        help="episodes (reward evaluations) per seed and method (default: "
        f"{DEFAULT_EVALS[True]} with --quick, {DEFAULT_EVALS[False]} without)",
    )
    p.add_argument("--supernet-ckpt", help="pre-trained supernet (ckpt/cont variants)")
    p.add_argument("--out", default="benchmarks/results/agents", help="output folder")
    p.add_argument(
        "--rescore-seeds",
        type=int,
        default=5,
        help="re-score each final genotype with jaxdarts.score on this many seeds "
        "(supernet inits and batches; 0: skip)",
    )
    p.add_argument(
        "--reuse",
        action="store_true",
        help="reuse finished run folders under --out/runs (summary.json present) "
        "instead of searching again",
    )
    return p


def make_config(method: str, a: argparse.Namespace) -> dict[str, Any]:
    """The search config of one method: ``evals`` episodes of every seed."""
    from jaxdarts import search

    preset = "quick" if a.quick else "paper"
    sets: dict[str, Any] = {"agent": method, "seeds": a.seeds, "seed": 0}
    if a.supernet_ckpt:
        sets["supernet.checkpoint"] = a.supernet_ckpt
    cfg = search.make_config(a.variant, preset, **sets)
    env, _, _ = search.resolve(cfg)
    cfg["run"]["total_steps"] = a.evals * env.episode_length
    per_update = search.resolve(cfg)[1].n_steps * cfg["env"]["num_envs"]
    updates = -(-cfg["run"]["total_steps"] // per_update)
    chunk = cfg["run"]["updates_per_chunk"]
    # one compiled chunk size only: the largest divisor of the updates <= the preset's
    cfg["run"]["updates_per_chunk"] = max(
        d for d in range(1, min(chunk, updates) + 1) if updates % d == 0
    )
    return cfg


def _per_seed(metrics: list[dict[str, Any]], key: str, seeds: int) -> np.ndarray:
    """``[updates, seeds]`` of one metric (NaN where null)."""
    out = []
    for m in metrics:
        v = m.get(key)
        v = v if isinstance(v, list) else [v] * seeds
        out.append([np.nan if x is None else float(x) for x in v])
    return np.asarray(out, np.float64)


def curves(metrics: list[dict[str, Any]], seeds: int) -> dict[str, np.ndarray]:
    """``evals`` (cumulative episodes ``[U, S]``), ``best`` (best reward so far)
    and the per-update ``mean``/``count`` of the episodes' rewards."""
    count = np.nan_to_num(_per_seed(metrics, "num_episodes", seeds))
    rmax = np.nan_to_num(_per_seed(metrics, "reward_max", seeds), nan=-np.inf)
    mean = _per_seed(metrics, "reward_mean", seeds)
    return {
        "evals": np.cumsum(count, axis=0),
        "best": np.maximum.accumulate(rmax, axis=0),
        "mean": mean,
        "count": count,
    }


def seed_numbers(c: dict[str, np.ndarray], summary: dict[str, Any]) -> list[dict]:
    """Per seed: ``best``, ``last10``, ``final``, ``evals``."""
    updates = c["mean"].shape[0]
    tail = slice(updates - max(1, math.ceil(0.1 * updates)), updates)
    out = []
    for s, seed in enumerate(summary["seeds"]):
        n, m = c["count"][tail, s], np.nan_to_num(c["mean"][tail, s])
        out.append(
            {
                "best": float(c["best"][-1, s]),
                "last10": float((n * m).sum() / max(n.sum(), 1)),
                "final": seed["reward"],
                "evals": int(c["evals"][-1, s]),
            }
        )
    return out


def run_method(method: str, a: argparse.Namespace) -> dict[str, Any]:
    """One search run of all seeds; returns its numbers and curves."""
    from jaxdarts import searching

    cfg = make_config(method, a)
    out = os.path.join(a.out, "runs", method)
    done = os.path.join(out, "summary.json")
    if a.reuse and os.path.isfile(done):
        with open(done) as f:
            summary = json.load(f)
        wall = summary["wall_s"]
    else:
        t0 = time.time()
        summary = searching.run(cfg, out=out, overwrite=True)
        wall = time.time() - t0
    metrics = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    c = curves(metrics, a.seeds)
    return {
        "method": method,
        "run": out,
        "total_steps": cfg["run"]["total_steps"],
        "wall_s": wall,
        "seeds": seed_numbers(c, summary),
        "curve": {"evals": c["evals"].tolist(), "best": c["best"].tolist()},
    }


def rescore(results: list[dict[str, Any]], a: argparse.Namespace) -> None:
    """Adds ``rescored`` to every seed: its final genotype's reward by
    :func:`jaxdarts.scoring.score_genotypes` (same reward kind and supernet size,
    batch size and NWOT flavour, mean over ``a.rescore_seeds`` supernet
    initialisations and un-augmented validation batches), the same yardstick for
    both methods."""
    from jaxdarts import config as config_lib
    from jaxdarts import scoring

    cfg0 = make_config("ppo", a)
    sets = {
        "seeds": a.rescore_seeds,
        "reward.kind": cfg0["env"]["reward"],
        "reward.batch_size": cfg0["env"]["batch_size"],
        "reward.nwot_flavour": cfg0["env"]["nwot_flavour"],
        "supernet.space": cfg0["supernet"]["space"],
        "supernet.checkpoint": cfg0["supernet"]["checkpoint"],
    }
    if not cfg0["supernet"]["checkpoint"]:
        sets["supernet.channels"] = cfg0["supernet"]["channels"]
        sets["supernet.layers"] = cfg0["supernet"]["layers"]
    preset = "quick" if a.quick else "paper"
    cfg = config_lib.load("score", preset=preset, overrides=sets)
    files = []
    for r in results:
        for s in range(len(r["seeds"])):
            suffix = "" if len(r["seeds"]) == 1 else f"-seed{s}"
            files.append(os.path.join(r["run"], f"genotype{suffix}.json"))
    records = scoring.score_genotypes(files, cfg)["records"]
    it = iter(records)
    for r in results:
        for seed in r["seeds"]:
            seed["rescored"] = float(next(it)["mean"])


def _ms(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray(values, np.float64)
    return float(v.mean()), float(v.std())


def table(results: list[dict[str, Any]]) -> str:
    """Markdown table: mean ± std over seeds of each number, per method."""
    lines = [
        "| method | best reward found | mean reward, last 10% | final genotype's "
        "reward | final genotype re-scored | episodes / seed | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cells = []
        for key in NUMBERS:
            if key not in r["seeds"][0]:
                cells.append("—")
                continue
            m, s = _ms([x[key] for x in r["seeds"]])
            cells.append(f"{m:.4g} ± {s:.2g}")
        ev = r["seeds"][0]["evals"]
        lines.append(
            f"| {r['method']} | {' | '.join(cells)} | {ev} | {r['wall_s']:.0f} |"
        )
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: str, title: str) -> None:
    """Best reward so far against evaluations, mean ± std band over seeds (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, r in enumerate(results):
        x = np.asarray(r["curve"]["evals"]).mean(axis=1)
        y = np.asarray(r["curve"]["best"])
        m, s = y.mean(axis=1), y.std(axis=1)
        ax.plot(x, m, "-", color=f"C{i}", label=r["method"])
        ax.fill_between(x, m - s, m + s, color=f"C{i}", alpha=0.25)
    ax.set(xlabel="reward evaluations (episodes)", ylabel="best reward so far")
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def compare(a: argparse.Namespace) -> dict[str, Any]:
    """Runs both methods and writes ``agents.{json,md,png}`` into ``a.out``."""
    if a.seeds < 1:
        raise SystemExit("--seeds must be >= 1")
    if a.evals is None:
        a.evals = DEFAULT_EVALS[a.quick]
    if a.evals < 1:
        raise SystemExit("--evals must be >= 1")
    from benchmarks import common as C

    os.makedirs(a.out, exist_ok=True)
    load = C.load_average()
    results = [run_method(m, a) for m in METHODS]
    if a.rescore_seeds > 0:
        rescore(results, a)
    preset = "quick" if a.quick else "paper"
    title = f"{a.variant}, --preset {preset}, {a.seeds} seeds, {a.evals} episodes"
    doc = {
        "settings": {
            "variant": a.variant,
            "preset": preset,
            "seeds": a.seeds,
            "evals": a.evals,
            "supernet_ckpt": a.supernet_ckpt,
            "rescore_seeds": a.rescore_seeds,
        },
        "load_average": load,
        "device": C.device_info(),
        "results": results,
        "table": table(results),
    }
    with open(os.path.join(a.out, "agents.json"), "w") as f:
        json.dump(doc, f, indent=1)
    with open(os.path.join(a.out, "agents.md"), "w") as f:
        load_s = "n/a" if load is None else f"{load:.1f}"
        f.write(f"{title} (1-min load average at start: {load_s})\n\n{doc['table']}\n")
    plot(results, os.path.join(a.out, "agents.png"), title)
    return doc


def run(rec, quick: bool) -> None:
    """Benchmark section: both methods on disc-nwot, 3 seeds (run_all)."""
    a = build_parser().parse_args(["--quick"] if quick else [])
    doc = compare(a)
    for r in doc["results"]:
        for key in NUMBERS:
            if key not in r["seeds"][0]:
                continue
            m, s = _ms([x[key] for x in r["seeds"]])
            rec.add("agents", f"{a.variant} {r['method']} {key}", m, "reward", std=s)


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    doc = compare(a)
    print(doc["table"])
    print(f"wrote {a.out}/agents.json, agents.md, agents.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
