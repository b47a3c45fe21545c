#!/usr/bin/env python
"""Writes ``docs/reproduction.md``: the nine variants at ``--preset quick`` on digits.

For each of the paper's nine variants the script runs the search
(``python -m jaxdarts.search --variant V --preset quick``), then trains the
deterministic genotype it found as the quick evaluation network
(``python -m jaxdarts.train --genotype RUN/genotype.json --preset quick``), and puts
the search's final reward (the deterministic genotype's reward) and the evaluation
network's test accuracy next to the paper's CIFAR-10 accuracy (mean ± std over 3
runs, max) for orientation only: digits at quick size are not CIFAR-10 at paper size.
The ``ckpt`` and ``cont`` variants use one supernet pre-trained first with
``python -m jaxdarts.pretrain --preset quick``.

Usage::

    python benchmarks/reproduce.py [--steps N] [--epochs N] [--pretrain-epochs N]
        [--variants V ...] [--work DIR] [--out docs/reproduction.md]

``--steps``/``--epochs``/``--pretrain-epochs`` shrink the budget (default: the quick
preset's). The page states the exact command line, date, machine and versions that
produced it; a row whose commands failed (or did not run) says so. The page is
rewritten after every variant, so an interrupted run leaves a partial page.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The paper's CIFAR-10 test accuracy of each variant's cell (mean ± std over 3
#: runs, max), as in the README's variant table.
PAPER = {
    "disc-nwot": (96.74, 0.30, 97.01),
    "disc-acc": (93.78, 0.12, 93.94),
    "disc-loss": (95.43, 0.06, 95.49),
    "disc-ckpt-acc": (95.74, 0.14, 95.87),
    "disc-ckpt-loss": (92.55, 0.39, 92.98),
    "cont-acc-step": (96.08, 0.19, 96.35),
    "cont-loss-step": (95.52, 0.16, 95.70),
    "cont-acc-grad-step": (96.24, 0.32, 96.42),
    "cont-loss-grad-step": (95.67, 0.29, 96.00),
}
VARIANTS = tuple(PAPER)


def needs_supernet(variant: str) -> bool:
    """Whether a variant scores with a pre-trained supernet."""
    return "ckpt" in variant or variant.startswith("cont")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python benchmarks/reproduce.py",
        description="Runs the nine variants at --preset quick on digits and writes "
        "the reproduction page.",
    )
    p.add_argument("--steps", type=int, help="search env steps (run.total_steps)")
    p.add_argument("--epochs", type=int, help="evaluation-network epochs")
    p.add_argument("--pretrain-epochs", type=int, help="supernet pre-training epochs")
    p.add_argument("--seed", type=int, default=0, help="seed of every run")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--work", default="runs/reproduce", help="run folders go here")
    p.add_argument("--out", default="docs/reproduction.md", help="the page")
    p.add_argument(
        "--page-only",
        action="store_true",
        help="run nothing: write the page from the finished runs under --work",
    )
    p.add_argument(
        "--reuse",
        action="store_true",
        help="keep what --work already holds: the pre-trained supernet and the "
        "finished variants (rows/<variant>.json), so that several processes (or "
        "an interrupted run) fill one page",
    )
    return p


def _cmd(args: list[str], log_path: str) -> tuple[bool, float]:
    """Runs ``python -m ...`` (output to ``log_path``); returns ``(ok, seconds)``."""
    t0 = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.run(
            [sys.executable, "-m", *args], cwd=ROOT, stdout=log, stderr=log
        )
    return proc.returncode == 0, time.time() - t0


def commands(variant: str, a: argparse.Namespace, supernet: str) -> list[list[str]]:
    """The search and train command lines of one variant."""
    run = os.path.join(a.work, variant)
    search = ["jaxdarts.search", "--variant", variant, "--preset", "quick"]
    search += ["--seed", str(a.seed), "--out", run, "--overwrite"]
    if a.steps:
        search += ["--total-steps", str(a.steps)]
    if needs_supernet(variant):
        search += ["--supernet-ckpt", supernet]
    train = ["jaxdarts.train", "--genotype", os.path.join(run, "genotype.json")]
    train += ["--preset", "quick", "--seed", str(a.seed)]
    train += ["--out", run + "-train", "--overwrite"]
    if a.epochs:
        train += ["--epochs", str(a.epochs)]
    return [search, train]


def pretrain_command(a: argparse.Namespace) -> tuple[str, list[str]]:
    """The supernet folder and the pre-training command line."""
    path = os.path.join(a.work, "supernet")
    cmd = ["jaxdarts.pretrain", "--preset", "quick", "--seed", str(a.seed)]
    cmd += ["--out", path, "--overwrite"]
    if a.pretrain_epochs:
        cmd += ["--epochs", str(a.pretrain_epochs)]
    return path, cmd


def pretrain(a: argparse.Namespace) -> tuple[str, bool, list[str]]:
    """Pre-trains the quick supernet once; returns ``(folder, ok, command)``."""
    path, cmd = pretrain_command(a)
    if a.reuse and os.path.isfile(os.path.join(ROOT, path, "result.json")):
        return path, True, cmd
    ok, _ = _cmd(cmd, os.path.join(a.work, "pretrain.log"))
    return path, ok, cmd


def _row_file(a: argparse.Namespace, variant: str) -> str:
    return os.path.join(ROOT, a.work, "rows", f"{variant}.json")


def load_rows(a: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The finished rows under ``--work`` (of this or another process)."""
    rows = {}
    for v in VARIANTS:
        row = _read(_row_file(a, v))
        if row is not None:
            rows[v] = row
    return rows


def save_row(a: argparse.Namespace, row: dict[str, Any]) -> None:
    path = _row_file(a, row["variant"])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(row, f, indent=1)


def _read(path: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(ROOT, path)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def run_variant(variant: str, a: argparse.Namespace, supernet: str) -> dict[str, Any]:
    """Search then train one variant; returns its row (None where a step failed)."""
    search, train = commands(variant, a, supernet)
    row: dict[str, Any] = {"variant": variant, "reward": None, "accuracy": None}
    if a.reuse or a.page_only:
        done = finished_row(variant, a)
        if done is not None or a.page_only:
            return done or {**row, "note": "not run (yet)"}
    ok, row["search_s"] = _cmd(search, os.path.join(a.work, f"{variant}-search.log"))
    summary = _read(os.path.join(a.work, variant, "summary.json")) if ok else None
    if summary is None:
        row["note"] = f"search failed (see {a.work}/{variant}-search.log)"
        return row
    row["reward"] = summary["seeds"][0]["reward"]
    row["genotype"] = summary["seeds"][0]["genotype"]
    ok, row["train_s"] = _cmd(train, os.path.join(a.work, f"{variant}-train.log"))
    result = (
        _read(os.path.join(a.work, variant + "-train", "result.json")) if ok else None
    )
    if result is None:
        row["note"] = f"training failed (see {a.work}/{variant}-train.log)"
        return row
    acc = float(result["test_accuracy"])
    row["accuracy"] = 100.0 * acc if acc <= 1.0 else acc
    return row


def finished_row(variant: str, a: argparse.Namespace) -> dict[str, Any] | None:
    """The row of a variant whose search and training folders are finished."""
    summary = _read(os.path.join(a.work, variant, "summary.json"))
    result = _read(os.path.join(a.work, variant + "-train", "result.json"))
    if summary is None or result is None:
        return None
    acc = float(result["test_accuracy"])
    return {
        "variant": variant,
        "reward": summary["seeds"][0]["reward"],
        "genotype": summary["seeds"][0]["genotype"],
        "accuracy": 100.0 * acc if acc <= 1.0 else acc,
        "search_s": summary.get("wall_s"),
        "train_s": result.get("wall_s"),
    }


def _versions() -> str:
    from importlib.metadata import version

    pkgs = ("jax", "flax", "optax", "numpy")
    return ", ".join(f"{p} {version(p)}" for p in pkgs)


def _git() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True
        )
        return out.stdout.decode().strip() or "unknown"
    except OSError:
        return "unknown"


def _num(x: Any, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def render(
    rows: dict[str, dict[str, Any]],
    a: argparse.Namespace,
    argv: Sequence[str],
    started: str,
    supernet_cmd: list[str] | None,
    done: bool,
) -> str:
    """The Markdown page."""
    cmds = {" ".join(map(shlex.quote, r["argv"])) for r in rows.values() if "argv" in r}
    cmds.add(" ".join(map(shlex.quote, argv)))
    cmd = "`; `".join(
        f"python benchmarks/reproduce.py {c}".strip() for c in sorted(cmds)
    )
    lines = [
        "# Reproduction at quick size (digits)",
        "",
        "Generated by `benchmarks/reproduce.py` (rerun it to regenerate this page).",
        "Each variant is searched at `--preset quick` on the embedded digits data,",
        "and the deterministic genotype it found is trained as the quick evaluation",
        "network. The paper's CIFAR-10 accuracies (mean ± std over 3 runs, max) are",
        "shown for orientation only: a 3-cell, 8-channel network on 8x8 digits with a",
        "budget of minutes is not the paper's 20-cell network on CIFAR-10, and the",
        "search reward is on the scale of its reward kind (NWOT score, accuracy in",
        "[0, 1], or -cross-entropy), so rewards of different kinds do not compare.",
        "",
        f"- command(s) (rows are shared through `--work`): `{cmd}`",
        f"- started: {started}; page written: "
        f"{datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}"
        + (
            ""
            if done
            else " (**incomplete**: rows without numbers did not run or failed)"
        ),
        f"- machine: {platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.platform()}); JAX backend: CPU unless JAX_PLATFORMS says otherwise",
        f"- versions: Python {platform.python_version()}, {_versions()}, "
        f"jaxdarts at git {_git()}",
        f"- search steps: {a.steps or 'the quick preset (4096)'}; evaluation epochs: "
        f"{a.epochs or 'the quick preset (10)'}; supernet pre-training epochs: "
        f"{a.pretrain_epochs or 'the quick preset'}; seed {a.seed}",
    ]
    if supernet_cmd:
        lines.append(f"- supernet: `python -m {' '.join(supernet_cmd)}`")
    lines += [
        "- with few search steps the PPO policy barely moves from its "
        "initialisation, which is the same for every variant of one seed, so "
        "variants can end with the same deterministic genotype (the note column "
        "says so); the search reward columns of the runs are still their own",
        "- per variant: `python -m jaxdarts.search --variant V --preset quick ...` "
        "then `python -m jaxdarts.train --genotype RUN/genotype.json --preset quick "
        "...` (flags as in the command lines above)",
        "",
        "| variant | search reward (final genotype) | quick test accuracy (%) "
        "| paper CIFAR-10 mean ± std | paper max | search s | train s | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    seen: dict[str, str] = {}
    for v in VARIANTS:
        r = dict(rows.get(v, {"note": "not run (yet)"}))
        g = r.get("genotype")
        if g in seen:
            r["note"] = (r.get("note", "") + f" same genotype as `{seen[g]}`").strip()
        elif g:
            seen[g] = v
        m, s, mx = PAPER[v]
        lines.append(
            f"| `{v}` | {_num(r.get('reward'), '.4g')} | "
            f"{_num(r.get('accuracy'), '.2f')} | {m:.2f} ± {s:.2f} | {mx:.2f} | "
            f"{_num(r.get('search_s'), '.0f')} | {_num(r.get('train_s'), '.0f')} | "
            f"{r.get('note', '')} |"
        )
    geno = [
        (v, rows[v]["genotype"]) for v in VARIANTS if rows.get(v, {}).get("genotype")
    ]
    if geno:
        lines += ["", "## Genotypes found", ""]
        lines += [f"- `{v}`: `{g}`" for v, g in geno]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = build_parser().parse_args(argv)
    os.makedirs(os.path.join(ROOT, a.work), exist_ok=True)
    out = os.path.join(ROOT, a.out)
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows: dict[str, dict[str, Any]] = {}
    supernet, supernet_cmd = os.path.join(a.work, "supernet"), None

    def write(done: bool = False) -> None:
        with open(out, "w") as f:
            f.write(render(rows, a, argv, started, supernet_cmd, done))

    if a.page_only:
        supernet, supernet_cmd = pretrain_command(a)
    elif any(needs_supernet(v) for v in a.variants):
        supernet, ok, supernet_cmd = pretrain(a)
        if not ok:
            print(f"pre-training failed: see {a.work}/pretrain.log", file=sys.stderr)
    for v in a.variants:
        if a.reuse:
            rows.update(load_rows(a))
        if v in rows and rows[v].get("reward") is not None:
            print(f"[reproduce] {v}: done already ({_row_file(a, v)})", flush=True)
            continue
        print(f"[reproduce] {v} ...", flush=True)
        rows[v] = run_variant(v, a, supernet)
        rows[v]["argv"] = argv
        if not a.page_only:
            save_row(a, rows[v])
        print(f"[reproduce] {v}: {rows[v]}", flush=True)
        if a.reuse:
            rows.update(load_rows(a))
        write()
    if a.reuse:
        rows.update(load_rows(a))
    write(done=all(rows.get(v, {}).get("reward") is not None for v in VARIANTS))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
