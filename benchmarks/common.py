"""Shared helpers of the benchmark sections: timing, records, tables, JSON, builders.

Every section module exposes ``run(rec: Recorder, quick: bool) -> None`` and records
rows ``(section, item, value, unit, config)`` with :meth:`Recorder.add`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

SMALL = {"channels": 4, "layers": 3, "batch": 32, "image": (8, 8, 1)}
PAPER = {"channels": 16, "layers": 8, "batch": 64, "image": (32, 32, 3)}
CIFAR_MEAN = (0.49, 0.48, 0.45)
CIFAR_STD = (0.25, 0.24, 0.26)


# ------------------------------------------------------------------------ records
@dataclasses.dataclass
class Recorder:
    """Collects rows ``(section, item, value, unit, config)`` and prints them."""

    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    verbose: bool = True

    def add(self, section: str, item: str, value: float | str, unit: str, **config):
        """Records one measurement (``config``: what was measured, JSON-able)."""
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)
        row = {"section": section, "item": item, "value": value, "unit": unit}
        if config:
            row["config"] = config
        self.rows.append(row)
        if self.verbose:
            print(f"  {section:14s} {item:52s} {fmt(value):>12s} {unit}", flush=True)


def fmt(v: Any) -> str:
    """A number in at most ~10 characters (strings pass through)."""
    if isinstance(v, str):
        return v
    if isinstance(v, int):
        return str(v)
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1e5 or a < 1e-3:
        return f"{v:.3e}"
    if a >= 100:
        return f"{v:.1f}"
    return f"{v:.4g}"


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    """Prints the rows as one aligned table."""
    if not rows:
        return
    w = max([len(r["item"]) for r in rows] + [4])
    print(f"\n{'section':14s} {'item':{w}s} {'value':>12s} unit")
    print("-" * (w + 36))
    for r in rows:
        print(f"{r['section']:14s} {r['item']:{w}s} {fmt(r['value']):>12s} {r['unit']}")


def write_json(path: str, meta: dict[str, Any], rows: Sequence[dict[str, Any]]):
    """Writes ``{"meta": meta, "rows": rows}``."""
    with open(path, "w") as f:
        json.dump({"meta": meta, "rows": list(rows)}, f, indent=1)


def compare(a_path: str, b_path: str) -> None:
    """Side-by-side table of two JSON results with the ratio B/A."""
    with open(a_path) as f:
        a = json.load(f)
    with open(b_path) as f:
        b = json.load(f)
    for name, d in (("A", a), ("B", b)):
        m = d.get("meta", {})
        print(
            f"{name}: {m.get('device_kind')} x{m.get('device_count')} "
            f"({m.get('backend')}, jax {m.get('jax')}, quick={m.get('quick')})"
        )
    amap = {(r["section"], r["item"]): r for r in a["rows"]}
    bmap = {(r["section"], r["item"]): r for r in b["rows"]}
    keys = list(amap) + [k for k in bmap if k not in amap]
    w = max([len(k[1]) for k in keys] + [4])
    print(f"\n{'section':14s} {'item':{w}s} {'A':>12s} {'B':>12s} {'B/A':>8s} unit")
    print("-" * (w + 58))
    for k in keys:
        ra, rb = amap.get(k), bmap.get(k)
        va = ra["value"] if ra else "-"
        vb = rb["value"] if rb else "-"
        ratio = "-"
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and va:
            ratio = f"{vb / va:.3g}"
        unit = (ra or rb)["unit"]
        print(
            f"{k[0]:14s} {k[1]:{w}s} {fmt(va):>12s} {fmt(vb):>12s} {ratio:>8s} {unit}"
        )


# ----------------------------------------------------------------- machine report
def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MiB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def load_average() -> float | None:
    """1-minute load average (None where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def device_info() -> dict[str, Any]:
    """Backend, device kind and count, versions, threads and load."""
    d = jax.devices()
    return {
        "backend": jax.default_backend(),
        "device_kind": d[0].device_kind,
        "device_count": len(d),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "load_average_1min": load_average(),
    }


def describe(meta: dict[str, Any]) -> str:
    """One line naming the machine of :func:`device_info`."""
    return (
        f"devices: {meta['device_count']} x {meta['device_kind']} ({meta['backend']}), "
        f"jax {meta['jax']}, {meta['cpu_count']} CPUs, "
        f"load {meta['load_average_1min']}"
    )


# ------------------------------------------------------------------------ timing
def block(x: Any) -> Any:
    """``jax.block_until_ready``."""
    return jax.block_until_ready(x)


def compile_fn(fn: Callable, *args: Any) -> tuple[Callable, float]:
    """``jax.jit(fn).lower(*args).compile()``; returns ``(compiled, seconds)``."""
    t = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - t


def time_calls(
    fn: Callable,
    *args: Any,
    min_time: float = 1.0,
    min_reps: int = 2,
    max_reps: int = 1000,
    warmup: int = 1,
) -> float:
    """Mean seconds per blocked ``fn(*args)``, after ``warmup`` calls.

    The warm-up matters on XLA:CPU, which pays a first-use cost per ``lax.switch``
    branch.
    """
    for _ in range(warmup):
        block(fn(*args))
    reps, total = 0, 0.0
    while reps < max_reps and (reps < min_reps or total < min_time):
        t = time.perf_counter()
        block(fn(*args))
        total += time.perf_counter() - t
        reps += 1
    return total / reps


# ---------------------------------------------------------------------- builders
def label(setting: dict[str, Any]) -> str:
    """``C16-L8-B64-32x32x3`` for a size dict such as :data:`PAPER`."""
    h, w, c = setting["image"]
    return (
        f"C{setting['channels']}-L{setting['layers']}-B{setting['batch']}-{h}x{w}x{c}"
    )


def supernet(setting: dict[str, Any], impl: str = "auto", edges: str = "auto"):
    """``(net, variables)`` of a random supernet of the given size."""
    from jaxdarts.supernet import SupernetConfig, get_supernet

    net = get_supernet(
        SupernetConfig(
            channels=setting["channels"],
            layers=setting["layers"],
            impl=impl,
            edges=edges,
        )
    )
    variables = jax.jit(lambda k: net.init(k, setting["image"]))(jax.random.key(0))
    return net, variables


def image_batch(setting: dict[str, Any], seed: int = 1):
    """Random normalised images ``[B, H, W, C]`` and labels ``[B]``."""
    b = setting["batch"]
    x = jax.random.normal(jax.random.key(seed), (b, *setting["image"]), jnp.float32)
    y = jax.random.randint(jax.random.key(seed + 1), (b,), 0, 10)
    return x, y


def random_archs(net, a: int, seed: int = 2):
    """``a`` random discrete architectures: ``(choice_normal, choice_reduce)``."""
    k = net.num_ops
    an = jax.random.normal(jax.random.key(seed), (a, 14, k))
    ar = jax.random.normal(jax.random.key(seed + 1), (a, 14, k))
    return jax.vmap(net.choices)(an, ar)


def synthetic_images(n: int, shape: tuple[int, int, int], seed: int = 0):
    """``n`` random uint8 images of ``shape`` and labels in 0..9 (CIFAR-shaped data).

    Throughput does not depend on pixel values, so these stand in for CIFAR-10.
    """
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.int32)
    return images, labels


def env_params_for(env_cfg, images, labels, mean, std, train=None, seed: int = 0):
    """Env params with a freshly initialised supernet (built from public pieces).

    Args:
      env_cfg: ``jaxdarts.env.EnvConfig``.
      images, labels: validation images ``[N, H, W, C]`` uint8 and labels ``[N]``.
      mean, std: per-channel normalisation.
      train: optional ``(images, labels)`` for the weight step.
      seed: supernet init seed.

    Returns:
      ``(env_cfg, env_params)``; ``env_cfg.crop_pad`` follows the image size.
    """
    from jaxdarts import data as data_lib
    from jaxdarts import env as env_lib

    shape = tuple(images.shape[1:])
    env_cfg = dataclasses.replace(env_cfg, crop_pad=data_lib.default_crop_pad(shape[0]))
    variables = jax.jit(lambda k: env_cfg.supernet.init(k, shape))(jax.random.key(seed))
    tr_x, tr_y = train if train is not None else (None, None)
    params = env_lib.make_params(
        env_cfg, variables, images, labels, mean, std, tr_x, tr_y
    )
    return env_cfg, params


def tiny_env(num_envs: int, path: str = "discrete", batch: int = 16, layers: int = 2):
    """A C=4 supernet env on the bundled digits data: ``(cfg, params, LockstepEnv)``."""
    from jaxdarts import env as env_lib
    from jaxdarts.data import load_dataset, split_indices
    from jaxdarts.rewards import RewardConfig
    from jaxdarts.supernet import SupernetConfig

    ds = load_dataset("digits")
    _, va = split_indices(len(ds.train_images), 0)
    cfg = env_lib.EnvConfig(
        kind="discrete",
        net=SupernetConfig(channels=4, layers=layers),
        reward=RewardConfig(kind="nwot", path=path),
        batch_size=batch,
    )
    cfg, params = env_params_for(
        cfg, ds.train_images[va], ds.train_labels[va], ds.mean, ds.std
    )
    return cfg, params, env_lib.LockstepEnv(cfg, num_envs)


def synthetic_dataset(n: int = 5000, shape=(32, 32, 3), num_classes: int = 10):
    """A CIFAR-shaped :class:`~jaxdarts.data.ImageDataset` of random pixels."""
    from jaxdarts.data import ImageDataset

    images, labels = synthetic_images(n, shape)
    test_x, test_y = synthetic_images(max(n // 10, 1), shape, seed=1)
    mean, std = (CIFAR_MEAN, CIFAR_STD) if shape[2] == 3 else ((0.5,), (0.25,))
    return ImageDataset(
        "synthetic", images, labels, test_x, test_y, num_classes, mean, std
    )


def search_config(variant: str, preset: str, num_envs: int, **sets):
    """The validated search config of a variant and preset plus dotted overrides."""
    from jaxdarts import config as config_lib

    over = {"env.num_envs": num_envs, "ppo.transitions_per_update": 2048}
    over.update(sets)
    return config_lib.load("search", preset=preset, variant=variant, overrides=over)


def search_setup(variant: str, preset: str, num_envs: int, synthetic: bool, **sets):
    """A search variant's env and PPO config with params, from :mod:`jaxdarts.build`.

    Args:
      variant: e.g. ``"disc-nwot"``.
      preset: ``"quick"`` or ``"paper"``.
      num_envs: lockstep envs (rollout stays 2048 transitions per update unless
        ``**sets`` says otherwise).
      synthetic: random CIFAR-shaped images instead of the preset's dataset.
      **sets: extra dotted config overrides (``{"supernet.channels": 8}``).

    Returns:
      ``(env_cfg, ppo_cfg, env_params, LockstepEnv)`` of the first seed.
    """
    from jaxdarts import build
    from jaxdarts import env as env_lib

    cfg = search_config(variant, preset, num_envs, **sets)
    setup = build.search_setup(cfg, synthetic_dataset() if synthetic else None)
    params = jax.tree.map(lambda a: a[0], setup.env_params)
    return (
        setup.env,
        setup.ppo,
        params,
        env_lib.LockstepEnv(setup.env, setup.num_envs),
    )
