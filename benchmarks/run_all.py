#!/usr/bin/env python
"""jaxdarts throughput benchmarks: one entry point, one table, one JSON file.

Usage::

    python benchmarks/run_all.py [--quick] [--only NAME ...] [--json OUT] [--plot OUT.png]
    python benchmarks/run_all.py --compare A.json B.json

Sections (``--only`` picks some; all by default):

* ``rewards``: NWOT rewards/s of ``A`` = 1, 8, 32 architectures scored at once, dense
  and discrete path, at the paper setting (C=16, 8 cells, batch 64, 32x32x3) and a
  small one (C=4, 3 cells, batch 32, 8x8x1); compile time to the first reward; peak
  RSS.
* ``nwot_roofline``: FLOPs of one NWOT reward (forward + kernel), this machine's fp32
  matmul GFLOP/s, the achieved fraction; the kernel alone in four exact forms
  (per-layer float32 Gram, one float32 Gram, bit-packed popcount, int8 matmul).
* ``env``: lockstep env steps/s for 1-256 envs (alpha-only steps, and full episodes
  with the episode-end rewards), tiny supernet.
* ``ppo``: PPO timesteps/s end to end for ``disc-nwot`` (one update of 2048 steps of
  1 env), at the quick supernet size and (without ``--quick``) the paper size.
* ``train``: training images/s of the supernet weight step (batch 64) and of the
  evaluation network (batch 96), float32 and bfloat16, and the projected wall time of
  the paper's 50-epoch pre-training and 600-epoch evaluation.
* ``devices``: a sharded search chunk and a data-parallel training step on 1 device vs
  all devices. On a CPU with one device it re-runs itself in a subprocess with
  ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (4 virtual devices sharing
  the same cores: this measures the overhead of sharding, not a speed-up).

Every timed function is compiled first (compile time recorded separately) and warmed
up once (XLA:CPU pays a first-use cost per ``lax.switch`` branch), then timed with
``block_until_ready``. Without ``--quick`` the paper-size items take tens of minutes
on a 2-core CPU. JAX's persistent compilation cache is switched off so that compile
times are real. Paper-size inputs are synthetic (random pixels of CIFAR-10's shape):
the throughput of these programs does not depend on the pixel values.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

SECTIONS = ("rewards", "nwot_roofline", "env", "ppo", "train", "devices")

SMALL = {"channels": 4, "layers": 3, "batch": 32, "image": (8, 8, 1)}
PAPER = {"channels": 16, "layers": 8, "batch": 64, "image": (32, 32, 3)}


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
            print(f"  {section:14s} {item:52s} {_fmt(value):>12s} {unit}", flush=True)


def _fmt(v: Any) -> str:
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


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MiB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def device_info() -> dict[str, Any]:
    """Backend, device kind and count, versions."""
    import jax

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
    }


# ------------------------------------------------------------------------ timing
def _block(x: Any) -> Any:
    import jax

    return jax.block_until_ready(x)


def compile_fn(fn: Callable, *args: Any) -> tuple[Callable, float]:
    """``jax.jit(fn).lower(*args).compile()``; returns ``(compiled, seconds)``."""
    import jax

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
    """Mean seconds per ``fn(*args)`` (blocked), after ``warmup`` calls."""
    for _ in range(warmup):
        _block(fn(*args))
    reps, total = 0, 0.0
    while reps < max_reps and (reps < min_reps or total < min_time):
        t = time.perf_counter()
        _block(fn(*args))
        total += time.perf_counter() - t
        reps += 1
    return total / reps


# -------------------------------------------------------------------- FLOP count
_ELEMENTWISE = {
    "add",
    "sub",
    "mul",
    "div",
    "max",
    "min",
    "neg",
    "exp",
    "log",
    "log1p",
    "tanh",
    "logistic",
    "sqrt",
    "rsqrt",
    "pow",
    "integer_pow",
    "abs",
    "sign",
    "square",
    "gt",
    "ge",
    "lt",
    "le",
    "eq",
    "ne",
    "and",
    "or",
    "not",
    "select_n",
    "erf",
    "population_count",
    "add_any",
}
_REDUCE = {
    "reduce_sum",
    "reduce_max",
    "reduce_min",
    "argmax",
    "argmin",
    "reduce_and",
    "reduce_or",
    "cumsum",
}


def _size(aval: Any) -> int:
    return int(math.prod(getattr(aval, "shape", ())))


def count_flops(jaxpr: Any, kernel_batch: int | None = None) -> dict[str, float]:
    """FLOPs of a (closed) jaxpr, loops multiplied out.

    XLA's ``cost_analysis()`` counts a ``while`` body once (so a ``lax.scan`` over
    the 14 edges of a cell counts one edge); this walks the jaxpr instead: ``scan``
    bodies count ``length`` times, ``cond`` / ``switch`` the *mean* over branches
    (the expected cost of a uniformly random op per edge), a ``while`` body once.
    ``dot_general`` / ``conv_general_dilated``: 2 x multiply-adds; elementwise
    arithmetic and comparisons: 1 per output element; reductions: 1 per input element.

    Args:
      jaxpr: ``jax.make_jaxpr(f)(*args)``.
      kernel_batch: when given, ``[B, B]`` outputs of ``dot_general`` (the NWOT Gram
        products) are also counted under ``kernel``.

    Returns:
      ``{"total", "dot_conv", "elementwise", "kernel", "while_loops"}``.
    """
    from jax.extend import core as jcore

    def sub_jaxprs(params):
        for v in params.values():
            items = v if isinstance(v, (tuple, list)) else (v,)
            for it in items:
                if isinstance(it, jcore.ClosedJaxpr):
                    yield it.jaxpr
                elif isinstance(it, jcore.Jaxpr):
                    yield it

    def walk(jp) -> dict[str, float]:
        acc = {
            "total": 0.0,
            "dot_conv": 0.0,
            "elementwise": 0.0,
            "kernel": 0.0,
            "while_loops": 0.0,
        }

        def add(d, scale=1.0):
            for k in acc:
                acc[k] += scale * d[k]

        for eqn in jp.eqns:
            name = eqn.primitive.name
            outs = [v.aval for v in eqn.outvars]
            ins = [v.aval for v in eqn.invars]
            if name == "dot_general":
                (_, r_contract), (_, r_batch) = eqn.params["dimension_numbers"]
                skip = set(r_contract) | set(r_batch)
                free = [d for i, d in enumerate(ins[1].shape) if i not in skip]
                f = 2.0 * _size(ins[0]) * math.prod(free)
                acc["total"] += f
                acc["dot_conv"] += f
                if kernel_batch and outs[0].shape == (kernel_batch, kernel_batch):
                    acc["kernel"] += f
            elif name == "conv_general_dilated":
                dn = eqn.params["dimension_numbers"]
                rhs = ins[1].shape
                out_feat = rhs[dn.rhs_spec[0]]
                f = 2.0 * _size(outs[0]) * math.prod(rhs) / out_feat
                acc["total"] += f
                acc["dot_conv"] += f
            elif name in _ELEMENTWISE:
                f = float(sum(_size(o) for o in outs))
                acc["total"] += f
                acc["elementwise"] += f
            elif name in _REDUCE:
                f = float(_size(ins[0]))
                acc["total"] += f
                acc["elementwise"] += f
            elif name == "scan":
                add(walk(eqn.params["jaxpr"].jaxpr), eqn.params["length"])
            elif name == "cond":
                branches = [walk(b.jaxpr) for b in eqn.params["branches"]]
                for b in branches:
                    add(b, 1.0 / len(branches))
            elif name == "while":
                acc["while_loops"] += 1
                add(walk(eqn.params["body_jaxpr"].jaxpr))
            else:
                for sub in sub_jaxprs(eqn.params):
                    add(walk(sub))
        return acc

    return walk(jaxpr.jaxpr)


# ---------------------------------------------------------------------- helpers
def _supernet(setting: dict[str, Any], impl: str = "auto"):
    import jax

    from jaxdarts.supernet import SupernetConfig, get_supernet

    net = get_supernet(
        SupernetConfig(
            channels=setting["channels"], layers=setting["layers"], impl=impl
        )
    )
    variables = jax.jit(lambda k: net.init(k, setting["image"]))(jax.random.key(0))
    return net, variables


def _batch(setting: dict[str, Any], seed: int = 1):
    import jax
    import jax.numpy as jnp

    b = setting["batch"]
    x = jax.random.normal(jax.random.key(seed), (b, *setting["image"]), jnp.float32)
    y = jax.random.randint(jax.random.key(seed + 1), (b,), 0, 10)
    return x, y


def _random_archs(net, a: int, seed: int = 2):
    import jax

    k = net.num_ops
    an = jax.random.normal(jax.random.key(seed), (a, 14, k))
    ar = jax.random.normal(jax.random.key(seed + 1), (a, 14, k))
    return jax.vmap(net.choices)(an, ar)


def _label(setting: dict[str, Any]) -> str:
    h, w, c = setting["image"]
    return (
        f"C{setting['channels']}-L{setting['layers']}-B{setting['batch']}-{h}x{w}x{c}"
    )


# --------------------------------------------------------------------- sections
def bench_rewards(rec: Recorder, quick: bool) -> None:
    """NWOT rewards/s, dense vs discrete, A architectures per call."""
    import jax
    import numpy as np

    from jaxdarts.rewards import RewardConfig, score_architectures

    settings = [("small", SMALL)] + ([] if quick else [("paper", PAPER)])
    counts = (1, 8) if quick else (1, 8, 32)
    for sname, setting in settings:
        net, variables = _supernet(setting)
        x, y = _batch(setting)
        results = {}
        for a in counts:
            cn, cr = _random_archs(net, a)
            for path in ("discrete", "dense"):
                if path == "dense" and sname == "paper" and a > 8:
                    continue  # every op of 8 cells x 32 archs: minutes per call on CPU
                cfg = RewardConfig(kind="nwot", path=path)
                archs = (
                    (cn, cr)
                    if path == "discrete"
                    else jax.vmap(net.one_hot_weights)(cn, cr)
                )

                def f(v, an, ar, x, y, cfg=cfg, net=net):
                    return score_architectures(net, v, an, ar, x, y, cfg)

                conf = {
                    "setting": _label(setting),
                    "A": a,
                    "path": path,
                    "impl": net.config.impl,
                }
                t0 = time.perf_counter()
                compiled, tc = compile_fn(f, variables, *archs, x, y)
                r, _ = _block(compiled(variables, *archs, x, y))
                first = time.perf_counter() - t0
                results[(a, path)] = np.asarray(r)
                dt = time_calls(
                    compiled, variables, *archs, x, y, min_time=0.5 if quick else 2.0
                )
                item = f"{sname} A={a} {path}"
                rec.add("rewards", f"{item} rewards/s", a / dt, "1/s", **conf)
                rec.add("rewards", f"{item} compile", tc, "s", **conf)
                rec.add("rewards", f"{item} time to first reward", first, "s", **conf)
            if (a, "dense") in results:
                diff = float(
                    np.max(np.abs(results[(a, "dense")] - results[(a, "discrete")]))
                )
                rec.add(
                    "rewards",
                    f"{sname} A={a} |dense - discrete| max",
                    diff,
                    "nats",
                    setting=_label(setting),
                )
        rec.add(
            "rewards",
            f"{sname} peak RSS",
            peak_rss_mb(),
            "MiB",
            setting=_label(setting),
        )


def _trace_code_sizes(net, variables, x, choice_n, choice_r) -> list[int]:
    """Units per sample of each ReLU layer seen while tracing the discrete forward."""
    import jax

    from jaxdarts import supernet as sn

    sizes: list[int] = []
    orig = sn.codes_to_stats

    def spy(codes, batch):
        sizes.extend(int(math.prod(c.shape[1:])) for c in codes)
        return orig(codes, batch)

    sn.codes_to_stats = spy
    try:
        jax.eval_shape(
            lambda v, a, b, x: net.apply_discrete(v, a, b, x, collect=True)[1],
            variables,
            choice_n,
            choice_r,
            x,
        )
    finally:
        sn.codes_to_stats = orig
    return sizes


def _kernel_forms(batch: int):
    """Four exact ways to get the NWOT Gram ``G`` and active counts ``h``."""
    import jax.numpy as jnp
    from jax import lax

    from jaxdarts.supernet import codes_to_stats

    def per_layer_f32(xs):
        s = codes_to_stats(xs, batch)
        return s.gram, s.active

    def concat_f32(xs):
        c = jnp.concatenate([(x > 0).reshape(batch, -1) for x in xs], 1)
        c = c.astype(jnp.float32)
        g = jnp.dot(c, c.T, precision=lax.Precision.HIGHEST)
        return g.astype(jnp.int32), c.sum(1).astype(jnp.int32)

    def popcount(xs):
        c = jnp.concatenate([(x > 0).reshape(batch, -1) for x in xs], 1)
        n = c.shape[1]
        c = jnp.pad(c, ((0, 0), (0, -n % 32))).reshape(batch, -1, 32)
        words = (c.astype(jnp.uint32) << jnp.arange(32, dtype=jnp.uint32)).sum(
            -1, dtype=jnp.uint32
        )
        pc = lax.population_count

        def row(w):
            return pc(words & w[None]).astype(jnp.int32).sum(-1)

        g = lax.map(row, words)
        return g, pc(words).astype(jnp.int32).sum(-1)

    def int8(xs):
        c = jnp.concatenate([(x > 0).reshape(batch, -1) for x in xs], 1)
        c = c.astype(jnp.int8)
        g = lax.dot_general(
            c, c, (((1,), (1,)), ((), ())), preferred_element_type=jnp.int32
        )
        return g, c.astype(jnp.int32).sum(1)

    return {
        "f32 per-layer Gram": per_layer_f32,
        "f32 one Gram": concat_f32,
        "bit-packed popcount": popcount,
        "int8 matmul": int8,
    }


def bench_roofline(rec: Recorder, quick: bool) -> None:
    """FLOPs of an NWOT reward vs this machine's matmul rate; kernel forms."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxdarts.rewards import RewardConfig, score_architectures

    # Peak: a big fp32 matmul.
    n = 2048
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    mm, _ = compile_fn(lambda p, q: p @ q, a, a)
    dt = time_calls(mm, a, a, min_time=1.0)
    peak = 2 * n**3 / dt
    rec.add("nwot_roofline", f"fp32 matmul {n}x{n}", peak / 1e9, "GFLOP/s")

    sname, setting = ("small", SMALL) if quick else ("paper", PAPER)
    net, variables = _supernet(setting)
    x, y = _batch(setting)
    b = setting["batch"]
    arch_count = 8
    cn, cr = _random_archs(net, arch_count)
    cfg = RewardConfig(kind="nwot", path="discrete")

    def f(v, an, ar, x, y):
        return score_architectures(net, v, an, ar, x, y, cfg)

    conf = {"setting": _label(setting), "path": "discrete", "impl": net.config.impl}
    jp = jax.make_jaxpr(f)(variables, cn, cr, x, y)
    flops = count_flops(jp, kernel_batch=b)
    per = {k: v / arch_count for k, v in flops.items()}
    compiled, tc = compile_fn(f, variables, cn, cr, x, y)
    xla = compiled.cost_analysis()
    xla = xla[0] if isinstance(xla, (list, tuple)) else xla
    dt = time_calls(compiled, variables, cn, cr, x, y, min_time=1.0 if quick else 3.0)
    t_reward = dt / arch_count
    rec.add(
        "nwot_roofline",
        f"{sname} FLOPs/reward (jaxpr, loops counted)",
        per["total"] / 1e9,
        "GFLOP",
        **conf,
    )
    rec.add(
        "nwot_roofline",
        f"{sname}   of which dot/conv",
        per["dot_conv"] / 1e9,
        "GFLOP",
        **conf,
    )
    rec.add(
        "nwot_roofline",
        f"{sname}   of which kernel Gram (f32 matmul)",
        per["kernel"] / 1e9,
        "GFLOP",
        **conf,
    )
    rec.add(
        "nwot_roofline",
        f"{sname} FLOPs/reward (XLA cost_analysis, loop bodies once)",
        float(xla.get("flops", float("nan"))) / arch_count / 1e9,
        "GFLOP",
        **conf,
    )
    rec.add("nwot_roofline", f"{sname} time/reward", t_reward * 1e3, "ms", **conf)
    rec.add(
        "nwot_roofline",
        f"{sname} achieved",
        per["total"] / t_reward / 1e9,
        "GFLOP/s",
        **conf,
    )
    rec.add(
        "nwot_roofline",
        f"{sname} achieved / fp32 matmul peak",
        per["total"] / t_reward / peak,
        "fraction",
        **conf,
    )
    rec.add("nwot_roofline", f"{sname} compile", tc, "s", **conf)

    # The kernel alone: synthetic ReLU inputs with the unit counts of a real reward.
    c0n, c0r = cn[0], cr[0]
    stats = jax.jit(
        lambda v, a_, b_, x: net.apply_discrete(v, a_, b_, x, collect=True)[1]
    )(variables, c0n, c0r, x)
    units = int(stats.units)
    traced = _trace_code_sizes(net, variables, x, c0n, c0r)
    sizes, left = [], units
    i = 0
    while left > 0:  # layers of the traced sizes, in order, until the unit count
        s = min(traced[i % len(traced)], left)
        sizes.append(s)
        left -= s
        i += 1
    keys = jax.random.split(jax.random.key(5), len(sizes))
    xs = [
        jax.random.normal(k, (b, s), jnp.float32)
        for k, s in zip(keys, sizes, strict=True)
    ]
    kconf = {
        "setting": _label(setting),
        "units_per_sample": units,
        "layers": len(sizes),
    }
    rec.add("nwot_roofline", f"{sname} kernel units/sample", units, "units", **kconf)
    ref = None
    for name, form in _kernel_forms(b).items():
        compiled, tc = compile_fn(form, xs)
        out = jax.device_get(compiled(xs))
        if ref is None:
            ref = out
        else:
            assert np.array_equal(out[0], ref[0]) and np.array_equal(out[1], ref[1]), (
                name
            )
        dt = time_calls(compiled, xs, min_time=0.5 if quick else 2.0)
        rec.add("nwot_roofline", f"{sname} kernel: {name}", dt * 1e3, "ms", **kconf)
    rec.add("nwot_roofline", f"{sname} kernel forms agree exactly", "yes", "", **kconf)


def _env_setup(num_envs: int, path: str = "discrete", batch: int = 16, layers: int = 2):
    import jax

    from jaxdarts import env as E
    from jaxdarts.data import load_dataset, split_indices
    from jaxdarts.rewards import RewardConfig
    from jaxdarts.supernet import SupernetConfig

    ds = load_dataset("digits")
    _, va = split_indices(len(ds.train_images), 0)
    cfg = E.EnvConfig(
        kind="discrete",
        net=SupernetConfig(channels=4, layers=layers),
        reward=RewardConfig(kind="nwot", path=path),
        batch_size=batch,
        crop_pad=1,
    )
    variables = jax.jit(lambda k: cfg.supernet.init(k, ds.image_shape))(
        jax.random.key(0)
    )
    params = E.make_params(
        cfg, variables, ds.train_images[va], ds.train_labels[va], ds.mean, ds.std
    )
    return cfg, params, E.LockstepEnv(cfg, num_envs)


def bench_env(rec: Recorder, quick: bool) -> None:
    """Lockstep env steps/s vs number of envs."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    counts = (1, 16, 256) if quick else (1, 4, 16, 64, 256)
    paths = ("discrete",) if quick else ("discrete", "dense")
    for path in paths:
        for n in counts:
            cfg, params, venv = _env_setup(n, path)

            def run(key, params, nsteps, venv=venv, n=n, k_ops=cfg.num_ops):
                _, state = venv.reset(key, params)

                def body(i, carry):
                    state, acc = carry
                    k = jax.random.fold_in(key, i)
                    a = jax.random.randint(k, (n,), 0, k_ops)
                    _, state, r, _, _, _ = venv.step(k, state, a, params)
                    return state, acc + r.sum()

                return lax.fori_loop(0, nsteps, body, (state, jnp.float32(0)))[1]

            key = jax.random.key(1)
            conf = {"num_envs": n, "path": path, "supernet": "C4-L2-B16-8x8x1"}
            compiled, tc = compile_fn(run, key, params, jnp.int32(1))
            ep = cfg.episode_length
            alpha_steps = ep - 1  # never reaches the episode end
            dt = time_calls(compiled, key, params, jnp.int32(alpha_steps), min_time=0.3)
            rec.add(
                "env",
                f"{path} n={n} alpha-only steps/s",
                n * alpha_steps / dt,
                "1/s",
                **conf,
            )
            episodes = 1 if quick else 2
            dt = time_calls(
                compiled,
                key,
                params,
                jnp.int32(ep * episodes),
                min_time=0.3 if quick else 1.0,
                min_reps=1,
            )
            rec.add(
                "env",
                f"{path} n={n} full-episode steps/s",
                n * ep * episodes / dt,
                "1/s",
                **conf,
            )
            rec.add("env", f"{path} n={n} compile", tc, "s", **conf)


def _search_params(cfg: dict, env_cfg, synthetic: bool):
    import dataclasses as dc

    import jax
    import numpy as np

    from jaxdarts import data as data_lib
    from jaxdarts import env as E

    if synthetic:
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (5000, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, 5000).astype(np.int32)
        mean, std, shape = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), (32, 32, 3)
    else:
        ds = data_lib.load_dataset(cfg["data"]["dataset"])
        _, va = data_lib.split_indices(len(ds.train_images), 0)
        images, labels = ds.train_images[va], ds.train_labels[va]
        mean, std, shape = ds.mean, ds.std, ds.image_shape
    env_cfg = dc.replace(env_cfg, crop_pad=data_lib.default_crop_pad(shape[0]))
    variables = jax.jit(lambda k: env_cfg.supernet.init(k, shape))(jax.random.key(0))
    return env_cfg, E.make_params(env_cfg, variables, images, labels, mean, std)


def bench_ppo(rec: Recorder, quick: bool) -> None:
    """PPO timesteps/s end to end: one update of 2048 steps of 1 env (disc-nwot)."""
    import jax

    from jaxdarts import env as E
    from jaxdarts import search
    from jaxdarts.ppo.train import make_train

    presets = ("quick",) if quick else ("quick", "paper")
    for preset in presets:
        cfg = search.make_config("disc-nwot", preset)
        search.set_override(cfg, "env.num_envs", 1)
        search.set_override(cfg, "ppo.transitions_per_update", 2048)
        env_cfg, ppo_cfg, num_envs = search.resolve(cfg)
        env_cfg, params = _search_params(cfg, env_cfg, synthetic=preset == "paper")
        venv = E.LockstepEnv(env_cfg, num_envs)
        init_fn, chunk_fn = make_train(ppo_cfg, venv)
        state = jax.jit(init_fn)(jax.random.key(0), params)
        chunk = functools.partial(chunk_fn, num_updates=1)
        net = env_cfg.net
        conf = {
            "preset": preset,
            "supernet": f"C{net.channels}-L{net.layers}",
            "batch": env_cfg.batch_size,
            "reward_path": env_cfg.reward.path,
            "n_steps": ppo_cfg.n_steps,
            "num_envs": num_envs,
            "data": "synthetic 32x32x3" if preset == "paper" else "digits",
        }
        compiled, tc = compile_fn(chunk, state, params)
        dt = time_calls(compiled, state, params, min_time=0.0, min_reps=1)
        steps = ppo_cfg.n_steps * num_envs
        rec.add("ppo", f"{preset} timesteps/s", steps / dt, "1/s", **conf)
        rec.add("ppo", f"{preset} one update", dt, "s", **conf)
        rec.add("ppo", f"{preset} compile", tc, "s", **conf)


def bench_train(rec: Recorder, quick: bool) -> None:
    """Supernet weight step and evaluation-network step, images/s and projections."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxdarts import pretrain as PT
    from jaxdarts import train as T

    shape = (8, 8, 1) if quick else (32, 32, 3)
    rng = np.random.default_rng(0)
    labels10 = rng.integers(0, 10, 256).astype(np.int32)
    images = rng.integers(0, 256, (256, *shape), dtype=np.uint8)
    mean, std = (0.5,) * shape[2], (0.25,) * shape[2]

    # Supernet weight step (pre-training), batch 64, float32.
    if quick:  # smaller than the quick preset (C8, L3): compile time dominates
        pcfg = PT.make_config("quick", batch_size=64, channels=4, layers=2)
    else:
        pcfg = PT.make_config("paper", batch_size=64)
    setup = PT.make_setup(pcfg, shape, 10, 25000, 25000, mean, std)
    state = PT.create_train_state(jax.random.key(0), setup, shape)
    x, y = jnp.asarray(images[:64]), jnp.asarray(labels10[:64])

    def pstep(s, x, y, k):
        return PT.train_step(s, x, y, k, jnp.float32(0.025), setup)

    key = jax.random.key(1)
    conf = {
        "net": f"supernet C{pcfg['channels']}-L{pcfg['layers']}",
        "batch": 64,
        "image": "x".join(map(str, shape)),
        "impl": pcfg["impl"],
        "dtype": "float32",
    }
    compiled, tc = compile_fn(pstep, state, x, y, key)
    dt = time_calls(compiled, state, x, y, key, min_time=1.0 if quick else 5.0)
    ips = 64 / dt
    rec.add("train", "supernet step f32 images/s", ips, "1/s", **conf)
    rec.add("train", "supernet step f32 compile", tc, "s", **conf)
    rec.add(
        "train",
        "supernet 50 epochs x 25k images (projected)",
        50 * 25000 / ips / 3600,
        "h",
        **conf,
    )

    # Evaluation network, batch 96, float32 and bfloat16.
    for bf16 in (False, True):
        over = {"genotype": "disc-nwot", "batch_size": 96, "bf16": bf16}
        if quick:
            over.update(channels=4, layers=2)
        tcfg = T.make_config("quick" if quick else "paper", **over)
        tsetup = T.make_setup(tcfg, shape, 10, 50000, mean, std)
        tstate = T.create_train_state(jax.random.key(0), tcfg, None, shape, 10)
        x, y = jnp.asarray(images[:96]), jnp.asarray(labels10[:96])

        def tstep(s, x, y, k, tsetup=tsetup):
            return T.train_step(
                s, x, y, k, jnp.float32(0.025), jnp.float32(0.0), tsetup
            )

        dtype = "bfloat16" if bf16 else "float32"
        conf = {
            "net": f"evalnet C{tcfg['channels']}-L{tcfg['layers']}",
            "batch": 96,
            "image": "x".join(map(str, shape)),
            "dtype": dtype,
            "cutout": tcfg["cutout"],
        }
        compiled, tc = compile_fn(tstep, tstate, x, y, key)
        dt = time_calls(compiled, tstate, x, y, key, min_time=1.0 if quick else 5.0)
        ips = 96 / dt
        tag = "bf16" if bf16 else "f32"
        rec.add("train", f"evalnet step {tag} images/s", ips, "1/s", **conf)
        rec.add("train", f"evalnet step {tag} compile", tc, "s", **conf)
        rec.add(
            "train",
            f"evalnet {tag} 600 epochs x 50k images (projected)",
            600 * 50000 / ips / 3600,
            "h",
            **conf,
        )


def bench_devices(rec: Recorder, quick: bool) -> None:
    """Sharded search chunk and data-parallel step: 1 device vs all devices."""
    import jax

    if jax.device_count() == 1 and jax.default_backend() == "cpu":
        _devices_subprocess(rec, quick)
        return
    import jax.numpy as jnp
    import numpy as np

    from jaxdarts import pretrain as PT
    from jaxdarts import sharding as S
    from jaxdarts.ppo.train import PPOConfig, make_train

    ndev = jax.device_count()
    counts = sorted({1, ndev})
    paths = ("dense",) if quick else ("dense", "discrete")
    num_envs = 2 * ndev
    layers = 1 if quick else 2
    for path in paths:
        cfg, params0, venv = _env_setup(num_envs, path, layers=layers)
        ppo = PPOConfig(n_steps=28, batch_size=56, n_epochs=2)
        init_fn, chunk_fn = make_train(ppo, venv)
        state0 = jax.jit(init_fn)(jax.random.key(1), params0)
        chunk = functools.partial(chunk_fn, num_updates=1)
        for n in counts:
            mesh = S.make_mesh(n)
            state = S.shard_train_state(state0, mesh)
            params = S.replicate(params0, mesh)
            conf = {
                "devices": n,
                "num_envs": num_envs,
                "path": path,
                "supernet": f"C4-L{layers}-B16-8x8x1",
                "n_steps": 28,
            }
            compiled, tc = compile_fn(chunk, state, params)
            dt = time_calls(compiled, state, params, min_time=1.0 if quick else 3.0)
            rec.add(
                "devices",
                f"search chunk {path} {n} dev timesteps/s",
                28 * num_envs / dt,
                "1/s",
                **conf,
            )
            rec.add("devices", f"search chunk {path} {n} dev compile", tc, "s", **conf)

    shape = (8, 8, 1)
    pcfg = PT.make_config("quick", channels=4, layers=2, batch_size=32)
    setup = PT.make_setup(pcfg, shape, 10, 1000, 1000, (0.5,), (0.25,))
    state0 = PT.create_train_state(jax.random.key(0), setup, shape)
    rng = np.random.default_rng(0)
    x0 = rng.integers(0, 256, (32, *shape), dtype=np.uint8)
    y0 = rng.integers(0, 10, 32).astype(np.int32)

    def pstep(s, x, y, k):
        return PT.train_step(s, x, y, k, jnp.float32(0.025), setup)

    key = jax.random.key(1)
    for n in counts:
        mesh = S.make_mesh(n)
        state = S.replicate(state0, mesh)
        x, y = S.shard_batch(x0, y0, mesh)
        k = S.replicate(key, mesh)
        conf = {"devices": n, "batch": 32, "net": "supernet C4-L2 8x8x1"}
        compiled, tc = compile_fn(pstep, state, x, y, k)
        dt = time_calls(compiled, state, x, y, k, min_time=1.0 if quick else 3.0)
        rec.add("devices", f"supernet step {n} dev images/s", 32 / dt, "1/s", **conf)
        rec.add("devices", f"supernet step {n} dev compile", tc, "s", **conf)


def _devices_subprocess(rec: Recorder, quick: bool) -> None:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "devices.json")
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--only",
            "devices",
            "--json",
            out,
            "--no-table",
        ] + (["--quick"] if quick else [])
        print(
            "  (devices: re-running in a subprocess with 4 forced CPU devices)",
            flush=True,
        )
        proc = subprocess.run(cmd, env=env)
        if proc.returncode != 0:
            rec.add("devices", "subprocess failed", proc.returncode, "rc")
            return
        with open(out) as f:
            sub = json.load(f)
    for row in sub["rows"]:
        if row["item"] == "section wall time":
            continue
        cfg = dict(row.get("config", {}), forced_cpu_devices=4)
        rec.rows.append(dict(row, config=cfg))


BENCHES: dict[str, Callable[[Recorder, bool], None]] = {
    "rewards": bench_rewards,
    "nwot_roofline": bench_roofline,
    "env": bench_env,
    "ppo": bench_ppo,
    "train": bench_train,
    "devices": bench_devices,
}


# ------------------------------------------------------------------------ output
def print_table(rows: Sequence[dict[str, Any]]) -> None:
    """Prints the rows as one aligned table."""
    w = max([len(r["item"]) for r in rows] + [4])
    print(f"\n{'section':14s} {'item':{w}s} {'value':>12s} unit")
    print("-" * (w + 36))
    for r in rows:
        print(
            f"{r['section']:14s} {r['item']:{w}s} {_fmt(r['value']):>12s} {r['unit']}"
        )


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
    bmap = {(r["section"], r["item"]): r for r in b["rows"]}
    keys = [(r["section"], r["item"]) for r in a["rows"]]
    keys += [k for k in bmap if k not in set(keys)]
    amap = {(r["section"], r["item"]): r for r in a["rows"]}
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
            f"{k[0]:14s} {k[1]:{w}s} {_fmt(va):>12s} {_fmt(vb):>12s} {ratio:>8s} {unit}"
        )


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


# --------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python benchmarks/run_all.py",
        description="jaxdarts throughput benchmarks (table + JSON).",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small sizes only: checks the script in a few minutes",
    )
    p.add_argument(
        "--only",
        nargs="+",
        choices=SECTIONS,
        metavar="NAME",
        help=f"sections to run: {', '.join(SECTIONS)}",
    )
    p.add_argument("--json", metavar="OUT", help="write the results here")
    p.add_argument("--plot", metavar="OUT.png", help="draw the scaling curves")
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("A.json", "B.json"),
        help="print two result files side by side with B/A",
    )
    p.add_argument("--no-table", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.compare:
        compare(*args.compare)
        return 0
    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    meta = device_info()
    meta.update(
        quick=args.quick, argv=sys.argv[1:], started=time.strftime("%Y-%m-%d %H:%M:%S")
    )
    print(
        f"devices: {meta['device_count']} x {meta['device_kind']} ({meta['backend']}), "
        f"jax {meta['jax']}, {meta['cpu_count']} CPUs, quick={args.quick}",
        flush=True,
    )
    rec = Recorder()
    t_all = time.perf_counter()
    for name in args.only or SECTIONS:
        print(f"[{name}]", flush=True)
        t0 = time.perf_counter()
        BENCHES[name](rec, args.quick)
        rec.add(name, "section wall time", time.perf_counter() - t0, "s")
    meta["wall_s"] = time.perf_counter() - t_all
    meta["peak_rss_mib"] = peak_rss_mb()
    if not args.no_table:
        print_table(rec.rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rec.rows}, f, indent=1)
        if not args.no_table:
            print(f"\nresults: {args.json}")
    if args.plot:
        plot(rec.rows, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
