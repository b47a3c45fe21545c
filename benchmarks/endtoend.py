"""Section ``search``: the search command end to end, timesteps/s after compile.

Runs ``python -m jaxdarts.search`` itself (a subprocess, as a user would) on a
CIFAR-shaped ``.npz`` of random pixels written to a temporary folder (throughput does
not depend on pixel values), for a few PPO updates of one jitted call each, and reads
``steps_per_s`` of ``metrics.jsonl`` (compile time excluded: the first update's
compile time is its own field). Rows:

* ``disc-nwot --preset paper``: C=16, 8 cells, batch 64, 32x32x3 (fewer transitions
  per update than the paper's 2048 to keep it short: the rate per timestep is the
  same);
* ``cont-acc-step --compat dartsrl`` at C=8, 5 cells, batch 32: the reference's
  weight-step cadence (a weight step after every sweep), env steps/s.

Each command starts cold: a fresh persistent compilation cache of its own
(``JAXDARTS_CACHE_DIR`` in the temporary folder), so that the compile row (the first
chunk, with the final rollouts' program compiled alongside it) and the command's
wall time (everything: data, compiles, updates, final rollouts, outputs) are those
of a first run, whatever this machine's cache holds.

``--quick``: the ``quick`` preset (tiny supernet), 64 transitions per update.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks import common as C

RUNS = {  # name: (variant, preset, transitions per update, extra --set)
    "disc-nwot paper": ("disc-nwot", "paper", 512, ()),
    "cont-acc-step dartsrl C8-L5-B32": (
        "cont-acc-step",
        "paper",
        280,
        (
            "compat=dartsrl",
            "supernet.channels=8",
            "supernet.layers=5",
            "env.batch_size=32",
        ),
    ),
}
QUICK = {
    "disc-nwot quick": ("disc-nwot", "quick", 64, ()),
    "cont-acc-step dartsrl quick": ("cont-acc-step", "quick", 56, ("compat=dartsrl",)),
}
UPDATES = 3  # the first one compiles


def write_npz(path: str, n: int, shape=(32, 32, 3)) -> str:
    """A CIFAR-shaped ``.npz`` of ``n`` random images (and a tenth as a test set)."""
    images, labels = C.synthetic_images(n, shape)
    test_x, test_y = C.synthetic_images(max(n // 10, 1), shape, seed=1)
    np.savez(path, images=images, labels=labels, test_images=test_x, test_labels=test_y)
    return path


def search_command(variant, preset, transitions, sets, npz, out) -> list[str]:
    """The ``jaxdarts.search`` command line of one row."""
    cmd = [sys.executable, "-m", "jaxdarts.search", "--variant", variant]
    cmd += ["--preset", preset, "--out", out]
    sets = (
        f"data.dataset=npz:{npz}",
        f"ppo.transitions_per_update={transitions}",
        f"ppo.batch_size={min(64, transitions)}",
        f"run.total_steps={UPDATES * transitions}",
        "run.updates_per_chunk=1",
        "env.num_envs=1",
        *sets,
    )
    for s in sets:
        cmd += ["--set", s]
    return cmd


def random_supernet(folder: str, variant, preset, sets, shape=(32, 32, 3)) -> str:
    """Writes a randomly initialised supernet of a row's size as a pre-trained one.

    The ``cont`` and ``ckpt`` variants need ``--supernet-ckpt``; throughput does not
    depend on the weights, so a fresh init (the supernet file format of
    :func:`jaxdarts.checkpoint.save_supernet`) stands in for pre-training.
    """
    import jax

    from jaxdarts import build
    from jaxdarts import checkpoint as ckpt
    from jaxdarts import config as config_lib
    from jaxdarts.supernet import get_supernet

    sets = (*sets, f"supernet.checkpoint={folder}")
    cfg = config_lib.load("search", preset=preset, variant=variant, sets=sets)
    net_cfg = build.supernet_config(cfg["supernet"], 10, cfg["compat"])
    net = get_supernet(net_cfg)
    variables = jax.jit(lambda k: net.init(k, shape))(jax.random.key(0))
    meta = {
        "format": ckpt.SUPERNET_FORMAT,
        "space": net_cfg.space,
        "channels": net_cfg.channels,
        "layers": net_cfg.layers,
        "num_classes": net_cfg.num_classes,
        "stem_multiplier": net_cfg.stem_multiplier,
        "swap_cells": net_cfg.swap_cells,
        "image_shape": list(shape),
        "split_seed": 0,
        "compat": cfg["compat"],
        "note": "random init (benchmark stand-in)",
    }
    ckpt.save_supernet(folder, variables, meta)
    return folder


def read_rate(out: str) -> tuple[float, float]:
    """``(median timesteps/s of the updates after the first, compile s)``."""
    with open(os.path.join(out, "metrics.jsonl")) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    rates = [r["steps_per_s"] for r in recs[1:]] or [recs[-1]["steps_per_s"]]
    return statistics.median(rates), float(recs[0].get("compile_s", float("nan")))


def run(rec: C.Recorder, quick: bool) -> None:
    """Each row of :data:`RUNS` (``--quick``: :data:`QUICK`) through the CLI."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory() as tmp:
        npz = write_npz(os.path.join(tmp, "cifar_shaped.npz"), 2000 if quick else 10000)
        for name, (variant, preset, n, sets) in (QUICK if quick else RUNS).items():
            out = os.path.join(tmp, name.replace(" ", "_"))
            if variant.startswith("cont") or "ckpt" in variant:
                sup = random_supernet(out + "_supernet", variant, preset, sets)
                sets = (*sets, f"supernet.checkpoint={sup}")
            cmd = search_command(variant, preset, n, sets, npz, out)
            env["JAXDARTS_CACHE_DIR"] = out + "_jax_cache"  # cold: nothing cached
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            conf = {
                "command": " ".join(cmd[1:]).replace(tmp, "TMP"),
                "updates": UPDATES,
                "compilation_cache": "fresh",
            }
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                rec.add("search", f"{name} failed", proc.returncode, "rc", **conf)
                continue
            rate, tc = read_rate(out)
            unit = "env steps/s" if variant.startswith("cont") else "timesteps/s"
            rec.add("search", f"{name} {unit}", rate, "1/s", **conf)
            rec.add("search", f"{name} compile", tc, "s", **conf)
            rec.add("search", f"{name} command wall time", wall, "s", **conf)
