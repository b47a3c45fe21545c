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

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

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
from jaxdarts.tasks import supernet_task

__all__ = ["run", "main", "build_parser"]


log = logging.getLogger("jaxdarts.pretrain")


def _meta(job: T.Job, config, ds, state, epoch: int, v) -> dict[str, Any]:
    net, alphas = job.task.net, jax.device_get(state.extra["alphas"])
    fields = ("space", "channels", "layers", "num_classes", "stem_multiplier")
    return {
        "format": SUPERNET_FORMAT,
        **{k: getattr(net, k) for k in (*fields, "swap_cells", "eps")},
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
    task = supernet_task(config, ds.num_classes)
    setup = T.make_setup(
        config, ds.image_shape, len(tr), ds.mean, ds.std,
        num_valid=len(va) if task.paired_valid else 0,
        augment_eval=config["eval"]["augment"],
    )  # fmt: skip
    x, y = ds.train_images, ds.train_labels.astype(np.int32)
    data = {"train_x": x[tr], "train_y": y[tr]}
    if task.paired_valid:
        data.update(valid_x=x[va], valid_y=y[va])
    padded = T.pad_eval_set(x[va], y[va], setup.eval_batch_size)
    job = T.Job(
        "pretrain", task, setup, config["optim"], config["train"]["epochs"],
        T.commit(data, mesh), T.commit(padded, mesh), "valid", rundir,
        checkpoint_every=config["run"]["checkpoint_every"],
        max_to_keep=config["run"]["max_to_keep"], mesh=mesh, eval_before=True,
    )  # fmt: skip

    def on_best(state, epoch, v):
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        meta = _meta(job, config, ds, state, epoch, v)
        save_supernet(rundir.path / SUPERNET_DIR, variables, meta)

    job.on_best = on_best
    n = task.net
    log.info(
        "supernet %s, %d cells, C=%d, mode %s; data %s split %d/%d (seed %d)",
        n.space, n.layers, n.channels, config["mode"], ds.name, len(tr), len(va),
        config["seed"],
    )  # fmt: skip
    return job


def run(
    config: dict[str, Any],
    out: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    **kwargs: Any,
) -> dict[str, Any]:
    """Pre-trains a supernet; writes the run folder.

    Args:
      config: resolved config (``jaxdarts.config.load("pretrain", ...)``).
      out: run folder (default ``runs/pretrain-<space>-<time>``).
      resume: continue the run in ``out``; the config must equal the saved one.
      overwrite: replace an existing run folder ``out``.
      **kwargs: ``stop_after`` (stop with a checkpoint after this many epochs in
        total), ``interrupt`` (an object whose ``requested`` is polled after every
        chunk; default: Ctrl-C), ``devices`` (data parallelism over the first N
        devices); see :func:`jaxdarts.training.run_task`.

    Returns:
      ``result.json``'s contents, or (stopped early) ``interrupted: True``,
      ``ctrl_c``, ``epoch``, ``step`` and ``run_dir``.
    """
    out = out or T.default_out(f"pretrain-{config['supernet']['space']}")
    return T.run_task(
        "pretrain", config, out, _make_job, _finish,
        resume=resume, overwrite=overwrite, **kwargs,
    )  # fmt: skip


def _write_genotype(job: T.Job, state: T.TrainState) -> str:
    from jaxdarts.genotypes import derive_genotype, save_genotype_json

    a = jax.device_get(state.extra["alphas"])
    space = job.task.net.space
    genotype = derive_genotype(a["normal"], a["reduce"], space)
    path = job.rundir.path / "genotype.json"
    lists = {f"alpha_{k}": np.asarray(v).tolist() for k, v in a.items()}
    save_genotype_json(path, genotype, space, **lists)
    return str(path)


def _finish(job: T.Job, outcome: T.Outcome) -> dict[str, Any]:
    result, _ = T.run_result(job, outcome)
    initial = job.rundir.read_metrics()[0]
    result.update(
        initial_valid_loss=initial["valid_loss"],
        initial_valid_acc=initial["valid_acc"],
        params=T.count_params(outcome.state.params),
        space=job.task.net.space,
        mode=job.task.mode,
        supernet=str(job.rundir.path / SUPERNET_DIR),
    )
    if job.task.mode == "darts1":
        result["genotype_json"] = _write_genotype(job, outcome.state)
    job.rundir.write_json("result.json", result)
    best, loss = outcome.best_acc, (initial["valid_loss"], result["final_valid_loss"])
    rows = [
        ("best valid accuracy", f"{100 * best:.2f}% (epoch {outcome.best_epoch})"),
        ("final valid accuracy", f"{100 * result['final_valid_acc']:.2f}%"),
        ("valid loss", f"{loss[0]:.4f} -> {loss[1]:.4f}"),
        (
            "compile / train",
            f"{outcome.compile_s:.0f}s / {result['train_time_s']:.0f}s",
        ),
        ("supernet", result["supernet"]),
        ("outputs", f"{job.rundir.path} (result.json, metrics.jsonl, log.txt)"),
    ]
    print(T.format_summary("pretrain done", rows, outcome.wall_s))
    return result


# ------------------------------------------------------------------------- CLI

_FLAGS = (
    ("--mode", {"choices": ("weights", "darts1"), "help": "weights: the reference; "
                "darts1: first-order DARTS (alphas trained too)"}, "mode"),
    ("--space", {"help": "darts, s1-s4 or nas-bench-201"}, "supernet.space"),
    ("--channels", {"type": int, "help": "initial channels C"}, "supernet.channels"),
    ("--layers", {"type": int, "help": "number of cells"}, "supernet.layers"),
    ("--compat", {"choices": ["dartsrl"], "help": "dartsrl: the reference's "
                  "normal/reduce alpha swap"}, "compat"),
)  # fmt: skip


def build_parser():
    """The command-line parser and its flag -> config key map."""
    description = (
        "Pre-train the supernet's weights with the alphas frozen at their "
        "near-uniform draw; the best validation-accuracy weights go to "
        "<out>/supernet/."
    )
    return T.build_parser(
        "pretrain", description, "runs/pretrain-<space>-<time>", _FLAGS
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 done or stopped by
    ``--stop-after``, 2 bad input, 130 interrupted by Ctrl-C after a checkpoint)."""
    return cli.run_main(
        lambda a: T.command_main("pretrain", build_parser(), run, a), argv
    )


if __name__ == "__main__":
    sys.exit(main())
