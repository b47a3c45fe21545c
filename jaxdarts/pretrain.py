"""Pre-trains the supernet's weights (the ckpt and cont variants' starting point).

Command line::

    python -m jaxdarts.pretrain                          # paper: CIFAR-10, DARTS space
    python -m jaxdarts.pretrain --preset quick           # digits, the quick supernet
    python -m jaxdarts.pretrain --space s2 --compat dartsrl --out runs/pre-s2
    python -m jaxdarts.pretrain --resume runs/pre-s2

The supernet's *weights* are trained with SGD (:mod:`jaxdarts.training`) while the
alphas stay at their near-uniform draw ``alpha_std * N(0, 1)`` (drawn once from the
seed, never optimised), so every edge is a near-uniform mixture of its ops.
Training uses the first half of the seeded 50/50 split of the train set
(:func:`jaxdarts.data.split_indices`), with train-mode BatchNorm and random crop +
flip; after every epoch the second half is evaluated in eval mode.

``--mode darts1`` (beyond the reference) is first-order DARTS: every step first
takes an Adam step on the alphas (lr 3e-4, betas (0.5, 0.999), L2 weight decay 1e-3)
on a batch of the held-out half, then the SGD weight step with the updated alphas;
its "validation" metrics are then not held out, and it writes ``genotype.json``.

Outputs in the run folder (``--out``, default ``runs/pretrain-<space>-<time>``):
``config.json``, ``env.json``, ``log.txt``, ``metrics.jsonl`` (epoch 0 = before
training), ``checkpoints/``, ``result.json`` and ``supernet/``: the weights of the
best validation epoch so far with ``supernet.json``
(:func:`jaxdarts.checkpoint.load_supernet` reads it).

Differences from the reference: the last partial batch of an epoch is dropped; the
validation half is not augmented unless ``eval.augment``; gradient clipping scales
by ``max_norm / norm`` (torch: ``max_norm / (norm + 1e-6)``); the split comes from
NumPy; the default seed is 0 (the reference's is 42).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdarts import cli
from jaxdarts import training as T
from jaxdarts.checkpoint import (  # noqa: F401  (the names' old home)
    SUPERNET_DIR,
    SUPERNET_FORMAT,
    SUPERNET_META,
    load_supernet,
    save_supernet,
    supernet_config_from_meta,
    supernet_init_fn,
)
from jaxdarts.spaces import NUM_EDGES
from jaxdarts.supernet import SupernetConfig, get_supernet

__all__ = ["SupernetTask", "supernet_config", "train_impl", "run", "main"]

log = logging.getLogger("jaxdarts.pretrain")


def train_impl(impl: str) -> str:
    """``"auto"``: ``loop`` on CPU (it compiles and runs fastest there), else
    ``xla``; any other value as is."""
    if impl != "auto":
        return impl
    return "loop" if jax.default_backend() == "cpu" else "xla"


def supernet_config(config: dict[str, Any], num_classes: int) -> SupernetConfig:
    """The :class:`SupernetConfig` of a run config (``compat=dartsrl``: swap_cells)."""
    s = config["supernet"]
    return SupernetConfig(
        space=s["space"],
        channels=s["channels"],
        layers=s["layers"],
        num_classes=num_classes,
        stem_multiplier=s["stem_multiplier"],
        impl=train_impl(s["impl"]),
        swap_cells=config["compat"] == "dartsrl",
    )


@dataclasses.dataclass(frozen=True)
class SupernetTask:
    """The supernet with its alphas in ``state.extra`` (``{"alphas", "arch_opt"}``).

    ``darts1``: ``before_step`` takes DARTS' Adam step (L2 weight decay) on the
    alphas with the held-out batch's loss (train-mode BN, statistics updated).
    """

    net: SupernetConfig
    mode: str
    alpha_std: float
    arch: tuple[float, float, float, float]  # lr, beta1, beta2, weight_decay

    @property
    def paired_valid(self) -> bool:
        return self.mode == "darts1"

    @property
    def extra_sums(self) -> tuple[str, ...]:
        return ("arch_loss_sum",) if self.paired_valid else ()

    def arch_optimizer(self) -> optax.GradientTransformation:
        lr, b1, b2, wd = self.arch
        return optax.chain(
            optax.add_decayed_weights(wd),
            optax.scale_by_adam(b1=b1, b2=b2, eps=1e-8),
            optax.scale(-lr),
        )

    def init(self, key, image_shape):
        k_init, k_alpha = jax.random.split(key)
        variables = supernet_init_fn(self.net, image_shape)(k_init)
        kn, kr = jax.random.split(k_alpha)
        shape = (NUM_EDGES, get_supernet(self.net).num_ops)
        alphas = {
            "normal": self.alpha_std * jax.random.normal(kn, shape, jnp.float32),
            "reduce": self.alpha_std * jax.random.normal(kr, shape, jnp.float32),
        }
        opt = self.arch_optimizer().init(alphas) if self.paired_valid else ()
        extra = {"alphas": alphas, "arch_opt": opt}
        return variables["params"], variables["batch_stats"], extra

    def _apply(self, params, batch_stats, alphas, x, key, train):
        net = get_supernet(self.net)
        wn, wr = net.edge_weights(alphas["normal"], alphas["reduce"])
        variables = {"params": params, "batch_stats": batch_stats}
        return net.apply_dense(
            variables, wn, wr, x, train=train, key=key, mutable=train
        )

    def before_step(self, state, x, y, key):
        def arch_loss(a):
            logits, _, bs = self._apply(
                state.params, state.batch_stats, a, x, key, True
            )
            ce = T.cross_entropy(logits, y)
            return ce.mean(), (ce.sum(), bs)

        alphas = state.extra["alphas"]
        grads, (ce_sum, bs) = jax.grad(arch_loss, has_aux=True)(alphas)
        upd, opt = self.arch_optimizer().update(grads, state.extra["arch_opt"], alphas)
        extra = {"alphas": optax.apply_updates(alphas, upd), "arch_opt": opt}
        sums = {"arch_loss_sum": ce_sum.astype(jnp.float32)}
        return state.replace(batch_stats=bs, extra=extra), sums

    def loss(self, params, state, x, y, key, hyper):
        alphas = jax.lax.stop_gradient(state.extra["alphas"])
        logits, _, bs = self._apply(params, state.batch_stats, alphas, x, key, True)
        ce = T.cross_entropy(logits, y)
        return ce.mean(), (ce.sum(), logits, bs)

    def logits(self, state, x, key):
        alphas = state.extra["alphas"]
        return self._apply(state.params, state.batch_stats, alphas, x, key, False)[0]

    def hyper(self, epoch, epochs):
        return {}


def make_task(config: dict[str, Any], num_classes: int) -> SupernetTask:
    """The :class:`SupernetTask` of a resolved config."""
    a = config["arch"]
    return SupernetTask(
        net=supernet_config(config, num_classes),
        mode=config["mode"],
        alpha_std=float(config["supernet"]["alpha_std"]),
        arch=(a["lr"], a["beta1"], a["beta2"], a["weight_decay"]),
    )


def _meta(job: T.Job, config, ds, state, epoch: int, v) -> dict[str, Any]:
    net = job.task.net
    alphas = jax.device_get(state.extra["alphas"])
    return {
        "format": SUPERNET_FORMAT,
        **{k: getattr(net, k) for k in ("space", "channels", "layers", "num_classes")},
        **{k: getattr(net, k) for k in ("stem_multiplier", "swap_cells", "eps")},
        "compat": config["compat"],
        "image_shape": [int(d) for d in ds.image_shape],
        "dataset": ds.name,
        "mean": list(job.setup.mean),
        "std": list(job.setup.std),
        "seed": config["seed"],
        "split_seed": config["seed"],
        "split_note": "weights trained on split_indices(n_train, split_seed)[0]",
        "mode": config["mode"],
        "epoch": int(epoch),
        "epochs": job.epochs,
        "valid_acc": v["accuracy"],
        "valid_loss": v["loss"],
        "alphas": {k: np.asarray(a, np.float32).tolist() for k, a in alphas.items()},
    }


def _make_job(config, ds, rundir, mesh) -> T.Job:
    from jaxdarts.data import split_indices

    tr, va = split_indices(len(ds.train_labels), config["seed"])
    task = make_task(config, ds.num_classes)
    num_valid = len(va) if task.paired_valid else 0
    setup = T.make_setup(config, ds.image_shape, len(tr), ds.mean, ds.std,
                         num_valid=num_valid, augment_eval=config["eval"]["augment"])  # fmt: skip
    x, y = ds.train_images, ds.train_labels.astype(np.int32)
    data = {"train_x": x[tr], "train_y": y[tr]}
    if task.paired_valid:
        data.update(valid_x=x[va], valid_y=y[va])
    padded = T.pad_eval_set(x[va], y[va], setup.eval_batch_size)
    job = T.Job("pretrain", task, setup, config["optim"], config["train"]["epochs"],
                T.commit(data, mesh), T.commit(padded, mesh), "valid", rundir,
                T.commit(jax.random.split(jax.random.key(config["seed"]))[1], mesh),
                config["run"]["checkpoint_every"], config["run"]["max_to_keep"],
                mesh, eval_before=True)  # fmt: skip

    def on_best(state, epoch, v):
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        meta = _meta(job, config, ds, state, epoch, v)
        save_supernet(rundir.path / SUPERNET_DIR, variables, meta)

    job.on_best = on_best
    log.info(
        "data %s: split %d/%d (seed %d)", ds.name, len(tr), len(va), config["seed"]
    )
    return job


def run(config, out=None, resume=False, overwrite=False, *, stop_after=None,
        interrupt=None, devices=None) -> dict[str, Any]:  # fmt: skip
    """Pre-trains a supernet; writes the run folder.

    Args:
      config: resolved config (``jaxdarts.config.load("pretrain", ...)``).
      out: run folder (default ``runs/pretrain-<space>-<time>``).
      resume: continue the run in ``out``; the config must equal the saved one.
      overwrite: replace an existing run folder ``out``.
      stop_after: stop (with a checkpoint) after this many epochs in total.
      interrupt: an object with a ``requested`` attribute polled after every chunk
        (default: Ctrl-C).
      devices: data parallelism over the first ``devices`` devices.

    Returns:
      ``result.json``'s contents, or (stopped early) ``interrupted: True``, ``epoch``,
      ``step``, ``ctrl_c`` and ``run_dir``.
    """
    from jaxdarts.configs.pretrain import RESUME_MAY_CHANGE
    from jaxdarts.data import load_dataset

    out = out or T.default_out(f"pretrain-{config['supernet']['space']}")
    config, rundir = T.start_run(config, out, resume=resume, overwrite=overwrite,
                                 may_change=RESUME_MAY_CHANGE)  # fmt: skip
    mesh = T.data_mesh(devices, config["train"]["batch_size"])
    ds = load_dataset(config["data"]["dataset"], config["data"]["data_dir"])
    rundir = T.open_run(config, rundir, overwrite=overwrite)
    job = _make_job(config, ds, rundir, mesh)
    state = T.create_state(job.task, jax.random.split(jax.random.key(config["seed"]))[0],
                           ds.image_shape, job.setup)  # fmt: skip
    n_params = T.count_params(state.params)
    log.info("supernet %s, %d cells, C=%d, %.3fM parameters, mode %s", job.task.net.space,
             job.task.net.layers, job.task.net.channels, n_params / 1e6, config["mode"])  # fmt: skip
    outcome = T.fit(
        job, state, resume=resume, stop_after=stop_after, interrupt=interrupt
    )
    if not outcome.finished:
        return T.stopped_result(job, outcome)
    return _finish(job, outcome, config, ds, n_params)


def _finish(job, outcome, config, ds, n_params) -> dict[str, Any]:
    result, records = T.run_result(job, outcome)
    initial = job.rundir.read_metrics()[0]
    result.update(initial_valid_loss=initial["valid_loss"], params=n_params,
                  initial_valid_acc=initial["valid_acc"], space=job.task.net.space,
                  mode=config["mode"], dataset=ds.name,
                  supernet=str(job.rundir.path / SUPERNET_DIR))  # fmt: skip
    if config["mode"] == "darts1":
        from jaxdarts.genotypes import derive_genotype, save_genotype_json

        a = jax.device_get(outcome.state.extra["alphas"])
        g = derive_genotype(a["normal"], a["reduce"], job.task.net.space)
        path = job.rundir.path / "genotype.json"
        save_genotype_json(path, g, job.task.net.space, alpha_normal=a["normal"].tolist(),
                           alpha_reduce=a["reduce"].tolist())  # fmt: skip
        result["genotype_json"] = str(path)
    job.rundir.write_json("result.json", result)
    rows = [
        ("best valid accuracy", f"{100 * outcome.best_acc:.2f}% (epoch {outcome.best_epoch})"),
        ("final valid accuracy", f"{100 * result['final_valid_acc']:.2f}%"),
        ("valid loss", f"{initial['valid_loss']:.4f} -> {result['final_valid_loss']:.4f}"),
        ("compile / train", f"{outcome.compile_s:.0f}s / {result['train_time_s']:.0f}s"),
        ("supernet", result["supernet"]),
        ("outputs", f"{job.rundir.path} (result.json, metrics.jsonl, log.txt)"),
    ]  # fmt: skip
    print(T.format_summary("pretrain done", rows, outcome.wall_s))
    return result


# ------------------------------------------------------------------------- CLI

#: Flag (argparse dest) -> config key.
FLAGS = {"mode": "mode", "space": "supernet.space", "dataset": "data.dataset",
         "data_dir": "data.data_dir", "seed": "seed", "epochs": "train.epochs",
         "batch_size": "train.batch_size", "channels": "supernet.channels",
         "layers": "supernet.layers", "cutout": "augment.cutout", "compat": "compat"}  # fmt: skip


def build_parser():
    """The command-line parser."""
    p = cli.parser("pretrain", "Pre-train the supernet's weights with the alphas "
                   "frozen at their near-uniform draw; the best validation-accuracy "
                   "weights go to <out>/supernet/.")  # fmt: skip
    cli.add_run_args(p, "runs/pretrain-<space>-<time>")
    p.add_argument("--mode", choices=("weights", "darts1"),
                   help="weights: the reference; darts1: first-order DARTS (also "
                   "train the alphas on the held-out half)")  # fmt: skip
    p.add_argument("--space", help="search space: darts, s1-s4, nas-bench-201")
    p.add_argument("--dataset", help="digits, cifar10, a TFDS name or npz:PATH")
    p.add_argument("--data-dir", help="TFDS data folder")
    p.add_argument("--seed", type=int, help="seed of the init, alphas, split, data")
    p.add_argument("--epochs", type=int, help="training epochs")
    p.add_argument("--batch-size", type=int, help="training images per step")
    p.add_argument("--channels", type=int, help="initial channels C")
    p.add_argument("--layers", type=int, help="number of cells")
    p.add_argument("--cutout", type=int, help="cutout side (0: off; reference: 16)")
    p.add_argument("--compat", choices=["dartsrl"],
                   help="dartsrl: the reference's normal/reduce alpha swap")  # fmt: skip
    T.add_command_args(p)
    return p


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    config = T.config_for_run("pretrain", args, FLAGS)
    if args.print_config:
        cli.print_config("pretrain", config)
        return 0
    return T.run_command(run, config, args)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 done or stopped by
    ``--stop-after``, 2 bad input, 130 interrupted by Ctrl-C after a checkpoint)."""
    return cli.run_main(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
