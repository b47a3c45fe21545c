"""Section ``train``: supernet weight step and evaluation network, images/s."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common as C
from jaxdarts import pretrain as PT
from jaxdarts import train as T


def run(rec: C.Recorder, quick: bool) -> None:
    """Supernet weight step and evaluation-network step, images/s and projections."""

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
    compiled, tc = C.compile_fn(pstep, state, x, y, key)
    dt = C.time_calls(compiled, state, x, y, key, min_time=1.0 if quick else 5.0)
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
        compiled, tc = C.compile_fn(tstep, tstate, x, y, key)
        dt = C.time_calls(compiled, tstate, x, y, key, min_time=1.0 if quick else 5.0)
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
