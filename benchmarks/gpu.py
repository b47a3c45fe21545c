"""Section ``gpu``: is this accelerator ready? A check, then rewards/s and PPO speed.

1. **Correctness first**: on this device, the discrete and the dense NWOT paths must
   give the same reward for one-hot architectures (relative 1e-4); otherwise the
   section stops with an error before timing anything.
2. NWOT rewards/s for A = 1, 16, 64, 256 architectures per call, dense and discrete
   path, at the paper setting (C=16, 8 cells, batch 64, 32x32x3).
3. PPO disc-nwot timesteps/s at the paper setting (synthetic CIFAR-shaped data) with 1
   and 64 lockstep envs (2048 transitions per update either way), and the projected
   wall time of 1M disc-nwot steps (compile included).

Sized to finish in about 5 minutes on one H100/H200 (``benchmarks/gpu_check.sh``).
``--quick`` runs the same steps at the small setting (C=4, 3 cells, batch 32, 8x8x1;
A = 1, 4; the quick search preset with 1 and 4 envs) so that it can be checked on a
CPU.
"""

from __future__ import annotations

import jax
import numpy as np

from benchmarks import common as C
from benchmarks.ppo import end_to_end
from jaxdarts.rewards import RewardConfig, score_architectures

RTOL = 1e-4
TOTAL_STEPS = 1_000_000


def _scorer(net, path: str):
    cfg = RewardConfig(kind="nwot", path=path)

    def f(v, an, ar, x, y):
        return score_architectures(net, v, an, ar, x, y, cfg)

    return f


def _archs(net, path: str, choices):
    return choices if path == "discrete" else jax.vmap(net.one_hot_weights)(*choices)


def check_paths_agree(rec: C.Recorder, net, variables, x, y, setting) -> None:
    """Discrete vs dense NWOT on one-hot architectures; raises when they differ."""
    choices = C.random_archs(net, 4, seed=7)
    out = {}
    for path in ("discrete", "dense"):
        fn = jax.jit(_scorer(net, path))
        out[path] = np.asarray(fn(variables, *_archs(net, path, choices), x, y)[0])
    diff = np.abs(out["dense"] - out["discrete"]) / np.maximum(
        np.abs(out["discrete"]), 1.0
    )
    rec.add(
        "gpu",
        "check: |dense - discrete| / |discrete| (one-hot)",
        float(diff.max()),
        "rel",
        setting=C.label(setting),
        rewards=out["discrete"].tolist(),
    )
    if not (np.all(np.isfinite(out["discrete"])) and diff.max() <= RTOL):
        raise RuntimeError(
            f"on {jax.devices()[0].device_kind}, dense and discrete NWOT rewards "
            f"differ: {out['dense']} vs {out['discrete']} (relative tolerance {RTOL})"
        )


def rewards_per_s(rec: C.Recorder, quick: bool, setting) -> dict[str, float]:
    """Rewards/s per path and A; returns the best rewards/s per path."""
    net, variables = C.supernet(setting)
    x, y = C.image_batch(setting)
    check_paths_agree(rec, net, variables, x, y, setting)
    best: dict[str, float] = {}
    for a in (1, 4) if quick else (1, 16, 64, 256):
        choices = C.random_archs(net, a)
        for path in ("discrete", "dense"):
            conf = {"setting": C.label(setting), "A": a, "path": path}
            archs = _archs(net, path, choices)
            try:
                compiled, tc = C.compile_fn(_scorer(net, path), variables, *archs, x, y)
                dt = C.time_calls(compiled, variables, *archs, x, y, min_time=0.5)
            except Exception as e:  # e.g. out of memory at A=256 dense
                rec.add("gpu", f"A={a} {path} failed", type(e).__name__, "", **conf)
                continue
            rec.add("gpu", f"A={a} {path} rewards/s", a / dt, "1/s", **conf)
            rec.add("gpu", f"A={a} {path} compile", tc, "s", **conf)
            best[path] = max(best.get(path, 0.0), a / dt)
    return best


def run(rec: C.Recorder, quick: bool) -> None:
    """Correctness check, rewards/s, PPO timesteps/s, projection of 1M steps."""
    setting = C.SMALL if quick else C.PAPER
    best = rewards_per_s(rec, quick, setting)
    if best:
        path = max(best, key=best.get)
        rec.add("gpu", "fastest reward path (rewards/s)", path, "", **best)
    preset = "quick" if quick else "paper"
    speeds = {}
    for num_envs in (1, 4) if quick else (1, 64):
        speeds[num_envs] = end_to_end(rec, preset, num_envs, tag="gpu")
    for num_envs, (sps, compile_s) in speeds.items():
        rec.add(
            "gpu",
            f"1M disc-nwot steps, {num_envs} envs (projected)",
            (TOTAL_STEPS / sps + compile_s) / 60,
            "min",
            preset=preset,
            timesteps_per_s=sps,
            compile_s=compile_s,
        )
