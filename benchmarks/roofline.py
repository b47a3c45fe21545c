"""Section ``nwot_roofline``: FLOPs of an NWOT reward vs the matmul peak; kernel forms."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jcore

from benchmarks import common as C
from jaxdarts import supernet as sn
from jaxdarts.rewards import RewardConfig, score_architectures
from jaxdarts.supernet import codes_to_stats

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


def _trace_code_sizes(net, variables, x, choice_n, choice_r) -> list[int]:
    """Units per sample of each ReLU layer seen while tracing the discrete forward."""

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


def run(rec: C.Recorder, quick: bool) -> None:
    """FLOPs of an NWOT reward vs this machine's matmul rate; kernel forms."""

    # Peak: a big fp32 matmul.
    n = 2048
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    mm, _ = C.compile_fn(lambda p, q: p @ q, a, a)
    dt = C.time_calls(mm, a, a, min_time=1.0)
    peak = 2 * n**3 / dt
    rec.add("nwot_roofline", f"fp32 matmul {n}x{n}", peak / 1e9, "GFLOP/s")

    sname, setting = ("small", C.SMALL) if quick else ("paper", C.PAPER)
    net, variables = C.supernet(setting)
    x, y = C.image_batch(setting)
    b = setting["batch"]
    arch_count = 8
    cn, cr = C.random_archs(net, arch_count)
    cfg = RewardConfig(kind="nwot", path="discrete")

    def f(v, an, ar, x, y):
        return score_architectures(net, v, an, ar, x, y, cfg)

    conf = {"setting": C.label(setting), "path": "discrete", "impl": net.config.impl}
    jp = jax.make_jaxpr(f)(variables, cn, cr, x, y)
    flops = count_flops(jp, kernel_batch=b)
    per = {k: v / arch_count for k, v in flops.items()}
    compiled, tc = C.compile_fn(f, variables, cn, cr, x, y)
    xla = compiled.cost_analysis()
    xla = xla[0] if isinstance(xla, (list, tuple)) else xla
    dt = C.time_calls(compiled, variables, cn, cr, x, y, min_time=1.0 if quick else 3.0)
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
        "setting": C.label(setting),
        "units_per_sample": units,
        "layers": len(sizes),
    }
    rec.add("nwot_roofline", f"{sname} kernel units/sample", units, "units", **kconf)
    ref = None
    for name, form in _kernel_forms(b).items():
        compiled, tc = C.compile_fn(form, xs)
        out = jax.device_get(compiled(xs))
        if ref is None:
            ref = out
        else:
            assert np.array_equal(out[0], ref[0]) and np.array_equal(out[1], ref[1]), (
                name
            )
        dt = C.time_calls(compiled, xs, min_time=0.5 if quick else 2.0)
        rec.add("nwot_roofline", f"{sname} kernel: {name}", dt * 1e3, "ms", **kconf)
    rec.add("nwot_roofline", f"{sname} kernel forms agree exactly", "yes", "", **kconf)
