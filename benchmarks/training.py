"""Section ``train``: supernet weight step and evaluation network, images/s.

Built on the training core (:mod:`jaxdarts.training` + :mod:`jaxdarts.tasks`) with
configs from :func:`jaxdarts.config.load`.
"""

from __future__ import annotations

from benchmarks import common as C


def pretrain_config(preset: str, batch_size: int, channels=None, layers=None):
    from jaxdarts import config as config_lib

    over = {"train.batch_size": batch_size, "supernet.channels": channels,
            "supernet.layers": layers}  # fmt: skip
    return config_lib.load("pretrain", preset=preset, overrides=over)


def train_config(preset: str, genotype: str, batch_size: int, bf16: bool, **net):
    from jaxdarts import config as config_lib
    from jaxdarts.genotypes import load_genotype, to_json_dict

    over = {"genotype": to_json_dict(load_genotype(genotype)), "net.bf16": bf16,
            "train.batch_size": batch_size}  # fmt: skip
    over.update({f"net.{k}": v for k, v in net.items()})
    return config_lib.load("train", preset=preset, overrides=over)


def training_setup(config, shape, n_train, mean, std):
    """(task, setup, state) of a pretrain or train config (the training core)."""
    import jax

    from jaxdarts import tasks
    from jaxdarts import training as TR

    make = tasks.supernet_task if "supernet" in config else tasks.evalnet_task
    task = make(config, 10)
    setup = TR.make_setup(config, shape, n_train, mean, std)
    return task, setup, TR.create_state(task, jax.random.key(0), shape, setup)


def run(rec: C.Recorder, quick: bool) -> None:
    """Supernet weight step and evaluation-network step, images/s and projections."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxdarts import training as TR

    shape = (8, 8, 1) if quick else (32, 32, 3)
    rng = np.random.default_rng(0)
    labels10 = rng.integers(0, 10, 256).astype(np.int32)
    images = rng.integers(0, 256, (256, *shape), dtype=np.uint8)
    mean, std = (0.5,) * shape[2], (0.25,) * shape[2]

    # Supernet weight step (pre-training), batch 64, float32.
    if quick:  # smaller than the quick preset (C8, L3): compile time dominates
        pcfg = pretrain_config("quick", batch_size=64, channels=4, layers=2)
    else:
        pcfg = pretrain_config("paper", batch_size=64)
    task, setup, state = training_setup(pcfg, shape, 25000, mean, std)
    x, y = jnp.asarray(images[:64]), jnp.asarray(labels10[:64])

    def pstep(s, x, y, k):
        return TR.train_step(s, x, y, k, {"lr": jnp.float32(0.025)}, task, setup)

    key = jax.random.key(1)
    net = pcfg["supernet"]
    conf = {
        "net": f"supernet C{net['channels']}-L{net['layers']}",
        "batch": 64,
        "image": "x".join(map(str, shape)),
        "impl": pcfg["supernet"]["impl"],
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
        tcfg = train_config("quick" if quick else "paper", **over)
        ttask, tsetup, tstate = training_setup(tcfg, shape, 50000, mean, std)
        x, y = jnp.asarray(images[:96]), jnp.asarray(labels10[:96])

        def tstep(s, x, y, k, tsetup=tsetup, ttask=ttask):
            hyper = {"lr": jnp.float32(0.025), "drop_path": jnp.float32(0.0)}
            return TR.train_step(s, x, y, k, hyper, ttask, tsetup)

        dtype = "bfloat16" if bf16 else "float32"
        conf = {
            "net": f"evalnet C{tcfg['net']['channels']}-L{tcfg['net']['layers']}",
            "batch": 96,
            "image": "x".join(map(str, shape)),
            "dtype": dtype,
            "cutout": tcfg["augment"]["cutout"],
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
