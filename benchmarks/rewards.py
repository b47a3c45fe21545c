"""Section ``rewards``: the reward and the weight step.

* NWOT rewards/s of A architectures per call, dense vs discrete path;
* one discrete reward (A=1) at one setting in every ``(impl, edges)`` form of the
  supernet: median over 8 random architectures after every ``switch`` branch has
  run once, all-``none`` / all-``sep_conv_5x5`` / all-``skip_connect``, the NWOT
  statistics' overhead (the nwot reward minus the acc reward on the same
  architectures) and compile time;
* the dense weight step (SGD through ``apply_dense`` with train-mode BN) of the
  continuous variants.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from benchmarks import common as C
from jaxdarts.rewards import RewardConfig, score_architectures


def run(rec: C.Recorder, quick: bool) -> None:
    """Rewards/s per call size and path, every reward form, the weight step."""
    run_paths(rec, quick)
    run_forms(rec, quick)
    run_weight_step(rec, quick)


def run_paths(rec: C.Recorder, quick: bool) -> None:
    """NWOT rewards/s, dense vs discrete, A architectures per call."""

    settings = [("small", C.SMALL)] + ([] if quick else [("paper", C.PAPER)])
    counts = (1, 8) if quick else (1, 8, 32)
    for sname, setting in settings:
        net, variables = C.supernet(setting)
        x, y = C.image_batch(setting)
        results = {}
        for a in counts:
            cn, cr = C.random_archs(net, a)
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
                    "setting": C.label(setting),
                    "A": a,
                    "path": path,
                    "impl": net.config.impl,
                }
                t0 = time.perf_counter()
                compiled, tc = C.compile_fn(f, variables, *archs, x, y)
                r, _ = C.block(compiled(variables, *archs, x, y))
                first = time.perf_counter() - t0
                results[(a, path)] = np.asarray(r)
                dt = C.time_calls(
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
                    setting=C.label(setting),
                )
        rec.add(
            "rewards",
            f"{sname} peak RSS",
            C.peak_rss_mb(),
            "MiB",
            setting=C.label(setting),
        )


# ----------------------------------------------------------- forms of the reward
FORMS = (("loop", "scan"), ("loop", "unroll"), ("fused", "scan"), ("fused", "unroll"))
FIXED = ("none", "sep_conv_5x5", "skip_connect")


def _uniform(net, op: str):
    """Both cells' 14 edges all ``op``: ``([1, 14], [1, 14])`` choices."""
    cn, cr = net.choices_from_ops([op] * 14, [op] * 14)
    return cn[None], cr[None]


def _reward_fn(net, kind: str):
    cfg = RewardConfig(kind=kind, path="discrete")

    def f(v, an, ar, x, y):
        return score_architectures(net, v, an, ar, x, y, cfg)

    return f


def _median_s(compiled, variables, archs, x, y) -> float:
    """Median seconds of one call per architecture (each timed after the warm-up)."""
    times = [
        C.time_calls(compiled, variables, *a, x, y, min_time=0.0, min_reps=2, warmup=0)
        for a in archs
    ]
    return float(np.median(times))


def _one_form(rec, setting, impl: str, edges: str, n_archs: int) -> None:
    """A=1 discrete rewards of one ``(impl, edges)`` form: random archs, fixed archs,
    the NWOT statistics' overhead and compile time."""
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
    x, y = C.image_batch(setting)
    conf = {"setting": C.label(setting), "impl": impl, "edges": edges, "A": 1}
    tag = f"{impl}/{edges}"
    compiled = {}
    for kind in ("nwot", "acc"):
        compiled[kind], tc = C.compile_fn(
            _reward_fn(net, kind), variables, *_uniform(net, "none"), x, y
        )
        rec.add("rewards", f"{tag} {kind} compile", tc, "s", **conf)
    # XLA:CPU pays a first-use cost per switch branch: touch every op once.
    for op in net.op_names:
        for fn in compiled.values():
            C.block(fn(variables, *_uniform(net, op), x, y))
    archs = [
        tuple(a[None] for a in net.choices(*jax.random.normal(k, (2, 14, net.num_ops))))
        for k in jax.random.split(jax.random.key(3), n_archs)
    ]
    conf_r = dict(conf, archs=n_archs, stat="median")
    nwot = _median_s(compiled["nwot"], variables, archs, x, y)
    acc = _median_s(compiled["acc"], variables, archs, x, y)
    rec.add("rewards", f"{tag} nwot reward (random arch)", nwot * 1e3, "ms", **conf_r)
    rec.add("rewards", f"{tag} acc reward (random arch)", acc * 1e3, "ms", **conf_r)
    rec.add("rewards", f"{tag} NWOT statistics overhead", (nwot - acc) * 1e3, "ms",
            **conf_r)  # fmt: skip
    for op in FIXED:
        if op not in net.op_names:
            continue
        t = _median_s(compiled["nwot"], variables, [_uniform(net, op)], x, y)
        rec.add("rewards", f"{tag} nwot reward all-{op}", t * 1e3, "ms", **conf)


def run_forms(rec: C.Recorder, quick: bool) -> None:
    """The discrete reward in every ``(impl, edges)`` form at one setting."""
    setting = dict(C.SMALL, layers=2, batch=16) if quick else C.PAPER
    n_archs = 8
    for impl, edges in FORMS:
        _one_form(rec, setting, impl, edges, n_archs)


def weight_step_seconds(setting, impl: str = "auto", min_time: float = 1.0):
    """``(seconds per step, compile s)`` of one SGD step (momentum 0.9) through
    ``apply_dense`` with train-mode BN, softmax edge weights of random alphas."""
    import jax.numpy as jnp
    import optax

    from jaxdarts.supernet import SupernetConfig, get_supernet

    net = get_supernet(
        SupernetConfig(
            channels=setting["channels"], layers=setting["layers"], impl=impl
        )
    )
    variables = jax.jit(lambda k: net.init(k, setting["image"]))(jax.random.key(0))
    x, y = C.image_batch(setting)
    w = jax.nn.softmax(jax.random.normal(jax.random.key(4), (2, 14, net.num_ops)))
    opt = optax.sgd(0.025, momentum=0.9)
    opt_state = opt.init(variables["params"])

    def step(variables, opt_state, x, y):
        def loss(p):
            v = {"params": p, "batch_stats": variables["batch_stats"]}
            logits, _, bs = net.apply_dense(v, w[0], w[1], x, train=True, mutable=True)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
            return jnp.mean(ce), bs

        (_, bs), g = jax.value_and_grad(loss, has_aux=True)(variables["params"])
        upd, new_opt = opt.update(g, opt_state, variables["params"])
        p = optax.apply_updates(variables["params"], upd)
        return {"params": p, "batch_stats": bs}, new_opt

    compiled, tc = C.compile_fn(step, variables, opt_state, x, y)
    return C.time_calls(compiled, variables, opt_state, x, y, min_time=min_time), tc


def run_weight_step(rec: C.Recorder, quick: bool) -> None:
    """One SGD step through ``apply_dense`` with train-mode BN (the cont variants'
    weight step), C=8, 5 cells, batch 32, 32x32x3 (``--quick``: C=4, 2 cells, 8x8x1)."""
    setting = (
        {"channels": 4, "layers": 2, "batch": 32, "image": (8, 8, 1)}
        if quick
        else {"channels": 8, "layers": 5, "batch": 32, "image": (32, 32, 3)}
    )
    for impl in ("loop", "fused"):
        dt, tc = weight_step_seconds(setting, impl)
        conf = {"setting": C.label(setting), "impl": impl, "train_bn": True}
        rec.add("rewards", f"dense weight step {impl}", dt * 1e3, "ms", **conf)
        rec.add("rewards", f"dense weight step {impl} compile", tc, "s", **conf)
