"""Section ``rewards``: NWOT rewards/s of A architectures per call, dense vs discrete."""

from __future__ import annotations

import time

import jax
import numpy as np

from benchmarks import common as C
from jaxdarts.rewards import RewardConfig, score_architectures


def run(rec: C.Recorder, quick: bool) -> None:
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
