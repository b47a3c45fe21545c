"""The training core shared by ``pretrain`` (the supernet) and ``train`` (the
evaluation network).

A *task* is one model: how to initialise it, its training loss and its eval-mode
logits (:class:`Task`). Everything else is here, once:

- :class:`TrainState` and :func:`create_state`;
- the optimiser :func:`sgd`, ``clip_grad_norm_`` followed by ``torch.optim.SGD``:
  the raw gradient is clipped to global norm ``grad_clip`` first, then
  ``weight_decay * w`` is added, then the momentum buffer ``b = momentum * b + g``
  (``b = g`` at the first step) and ``w -= lr * b``;
- :func:`cosine_lr`, cosine annealing stepped per epoch
  (``CosineAnnealingLR(T_max=epochs)``); the epoch's rate is an *argument* of the
  compiled chunk, so a schedule change never recompiles;
- :func:`train_chunk`: ``steps_per_call`` steps as one ``lax.scan``, with the
  batches gathered on the device and augmented there (crop, flip, cutout);
- :func:`evaluate`: loss, top-1 and top-5 over a padded set in one scan;
- :func:`fit`: the epoch loop that owns the run folder's checkpoints and metrics,
  resumes bit-exactly (all randomness of epoch ``e``, step ``j`` derives from
  ``(seed, e, j)``), saves every ``checkpoint_every`` epochs and on Ctrl-C, shows a
  progress bar and records compile time apart from the images/s.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import functools
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdarts import sharding

__all__ = [
    "TrainState",
    "Task",
    "Setup",
    "Job",
    "Outcome",
    "make_setup",
    "sgd",
    "cosine_lr",
    "epoch_keys",
    "create_state",
    "cross_entropy",
    "augment_batch",
    "train_step",
    "eval_step",
    "zero_sums",
    "train_chunk",
    "pad_eval_set",
    "evaluate",
    "commit",
    "data_mesh",
    "count_params",
    "default_out",
    "start_run",
    "open_run",
    "fit",
    "run_task",
    "stopped_result",
    "COMMON_FLAGS",
    "add_flags",
    "build_parser",
    "config_for_run",
    "run_command",
    "command_main",
    "run_result",
    "format_summary",
]

log = logging.getLogger("jaxdarts.training")


# ---------------------------------------------------------------- state, task


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training.

    Attributes:
      params: network parameters (float32).
      batch_stats: BatchNorm running statistics.
      opt_state: SGD state (the momentum buffers).
      extra: the task's own state (the supernet's alphas and their Adam state;
        ``{}`` for the evaluation network).
    """

    params: Any
    batch_stats: Any
    opt_state: Any
    extra: Any


class Task(Protocol):
    """One model to train; a frozen (hashable) dataclass, static under ``jit``.

    Attributes:
      extra_sums: names of the task's own metric sums (``train_step`` adds them
        to the epoch's sums; recorded divided by the image count, ``_sum`` cut).
      paired_valid: every step also gets a batch of the held-out half (``darts1``).
    """

    extra_sums: tuple[str, ...]
    paired_valid: bool

    def init(self, key: jax.Array, image_shape: Sequence[int]) -> tuple[Any, Any, Any]:
        """``(params, batch_stats, extra)`` of a fresh model."""

    def before_step(
        self, state: TrainState, x: jax.Array, y: jax.Array, key: jax.Array
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """A step on ``state.extra`` before the weight step (augmented held-out
        batch ``x``); returns the task's metric sums of the step."""

    def loss(
        self,
        params: Any,
        state: TrainState,
        x: jax.Array,
        y: jax.Array,
        key: jax.Array,
        hyper: Mapping[str, jax.Array],
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array, Any]]:
        """``(mean loss, (summed main cross-entropy, logits, new batch_stats))``."""

    def logits(self, state: TrainState, x: jax.Array, key: jax.Array) -> jax.Array:
        """Eval-mode logits ``[B, classes]`` of normalised images ``x``."""

    def hyper(self, epoch: int, epochs: int) -> dict[str, float]:
        """The task's per-epoch scalars (arguments of the compiled chunk)."""


@dataclasses.dataclass(frozen=True)
class Setup:
    """Static (hashable) settings of the compiled functions; see :func:`make_setup`."""

    num_train: int
    num_valid: int
    batch_size: int
    steps_per_epoch: int
    steps_per_call: int
    eval_batch_size: int
    momentum: float
    weight_decay: float
    grad_clip: float
    crop_pad: int
    flip: bool
    cutout: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment_eval: bool = False


def make_setup(
    config: Mapping[str, Any],
    image_shape: Sequence[int],
    num_train: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    num_valid: int = 0,
    augment_eval: bool = False,
) -> Setup:
    """The static settings of a run from its config's ``train``, ``optim`` and
    ``augment`` groups.

    Args:
      config: a resolved ``pretrain`` or ``train`` config.
      image_shape: ``(H, W, C)``.
      num_train: training images.
      mean, std: per-channel normalisation (``[0, 1]`` pixel units).
      num_valid: images of the held-out half paired with every step (0: none).
      augment_eval: crop + flip the evaluated images too.

    Raises:
      ValueError: a batch larger than the training (or paired) images.
    """
    from jaxdarts.data import default_crop_pad

    tr, opt, aug = config["train"], config["optim"], config["augment"]
    n = min(num_train, num_valid) if num_valid else num_train
    steps = n // tr["batch_size"]
    if steps < 1:
        raise ValueError(
            f"train.batch_size {tr['batch_size']} is larger than the {n} training "
            "images"
        )
    crop_pad = aug["crop_pad"]
    if crop_pad is None:
        crop_pad = default_crop_pad(min(image_shape[0], image_shape[1]))
    return Setup(
        num_train=int(num_train),
        num_valid=int(num_valid),
        batch_size=tr["batch_size"],
        steps_per_epoch=steps,
        steps_per_call=min(tr["steps_per_call"], steps),
        eval_batch_size=tr["eval_batch_size"],
        momentum=float(opt["momentum"]),
        weight_decay=float(opt["weight_decay"]),
        grad_clip=float(opt["grad_clip"]),
        crop_pad=int(crop_pad),
        flip=bool(aug["flip"]),
        cutout=int(aug["cutout"]),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        augment_eval=bool(augment_eval),
    )


def sgd(setup: Setup | Mapping[str, float]) -> optax.GradientTransformation:
    """``clip_grad_norm_`` + ``torch.optim.SGD`` without the learning rate.

    The chain clip (``grad_clip > 0``) -> add ``weight_decay * w`` -> momentum
    trace; the caller applies ``w -= lr * update``.
    """

    def get(k: str) -> float:
        return setup[k] if isinstance(setup, Mapping) else getattr(setup, k)

    parts = []
    if get("grad_clip") > 0:
        parts.append(optax.clip_by_global_norm(get("grad_clip")))
    if get("weight_decay") > 0:
        parts.append(optax.add_decayed_weights(get("weight_decay")))
    if get("momentum") > 0:
        parts.append(optax.trace(decay=get("momentum"), nesterov=False))
    return optax.chain(*parts)


def cosine_lr(lr: float, lr_min: float, epochs: int, epoch: int) -> float:
    """``lr_min + (lr - lr_min) * (1 + cos(pi * epoch / epochs)) / 2`` (0-based
    epoch; constant within an epoch)."""
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * epoch / epochs))


def epoch_keys(key: jax.Array, epoch: int | jax.Array) -> tuple[jax.Array, ...]:
    """``(train shuffle, held-out shuffle, step root, eval)`` keys of an epoch; they
    depend only on the run key and the epoch."""
    return tuple(jax.random.split(jax.random.fold_in(key, epoch), 4))


def create_state(
    task: Task, key: jax.Array, image_shape: Sequence[int], setup: Setup
) -> TrainState:
    """A fresh :class:`TrainState`: the task's init and the SGD state."""
    params, batch_stats, extra = task.init(key, tuple(int(d) for d in image_shape))
    return TrainState(params, batch_stats, sgd(setup).init(params), extra)


# ---------------------------------------------------------------------- steps


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """``[B]`` softmax cross-entropy of integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def augment_batch(key: jax.Array, images: jax.Array, setup: Setup) -> jax.Array:
    """Crop, flip, normalise and cutout ``[B, H, W, C]`` raw images on the device."""
    from jaxdarts.data import augment

    return augment(
        key,
        images,
        crop_pad=setup.crop_pad,
        flip=setup.flip,
        cutout=setup.cutout,
        mean=setup.mean,
        std=setup.std,
    )


def train_step(
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    hyper: Mapping[str, jax.Array],
    task: Task,
    setup: Setup,
    valid_images: jax.Array | None = None,
    valid_labels: jax.Array | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One SGD step on one batch (after the task's :meth:`Task.before_step` when it
    pairs a held-out batch).

    Args:
      state: the training state.
      images: ``[B, H, W, C]`` raw images (uint8, or float in [0, 1]).
      labels: ``[B]`` int32.
      key: PRNG key of this step.
      hyper: ``lr`` and the task's per-epoch scalars (float32).
      task: the model.
      setup: static settings.
      valid_images, valid_labels: the held-out batch (``task.paired_valid``).

    Returns:
      ``(state, sums)``: ``loss_sum`` (summed main-head cross-entropy),
      ``correct``, ``count`` and the task's own sums.
    """
    k_aug, k_model, k_vaug, k_vmodel = jax.random.split(key, 4)
    extra_sums: dict[str, jax.Array] = {}
    if task.paired_valid:
        xv = augment_batch(k_vaug, valid_images, setup)
        state, extra_sums = task.before_step(state, xv, valid_labels, k_vmodel)
    x = augment_batch(k_aug, images, setup)

    def loss_fn(params):
        return task.loss(params, state, x, labels, k_model, hyper)

    grads, (ce_sum, logits, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = sgd(setup).update(grads, state.opt_state, state.params)
    lr = hyper["lr"]
    params = jax.tree.map(lambda p, u: p - lr * u, state.params, updates)
    sums = {
        "loss_sum": ce_sum.astype(jnp.float32),
        "correct": (logits.argmax(-1) == labels).sum().astype(jnp.int32),
        "count": jnp.asarray(labels.shape[0], jnp.int32),
        **extra_sums,
    }
    return state.replace(
        params=params, batch_stats=batch_stats, opt_state=opt_state
    ), sums


def eval_step(
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
    key: jax.Array,
    task: Task,
    setup: Setup,
) -> dict[str, jax.Array]:
    """Eval-mode sums of one batch: ``loss_sum``, ``correct``, ``correct5``
    (top-5) and ``count`` over the rows where ``mask`` is True."""
    from jaxdarts.data import normalize

    k_aug, k_model = jax.random.split(key)
    if setup.augment_eval:
        x = augment_batch(k_aug, images, setup)
    else:
        x = normalize(images, setup.mean, setup.std)
    logits = task.logits(state, x, k_model)
    ce = cross_entropy(logits, labels)
    top = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
    in_top = (top == labels[:, None]).any(-1)
    return {
        "loss_sum": jnp.where(mask, ce, 0.0).sum(),
        "correct": ((logits.argmax(-1) == labels) & mask).sum().astype(jnp.int32),
        "correct5": (in_top & mask).sum().astype(jnp.int32),
        "count": mask.sum().astype(jnp.int32),
    }


def zero_sums(task: Task) -> dict[str, jax.Array]:
    """The epoch's metric sums at 0."""
    sums = {
        "loss_sum": jnp.zeros((), jnp.float32),
        "correct": jnp.zeros((), jnp.int32),
        "count": jnp.zeros((), jnp.int32),
    }
    sums.update({k: jnp.zeros((), jnp.float32) for k in task.extra_sums})
    return sums


def _gather(data: Mapping[str, jax.Array], x: str, y: str, idx: jax.Array):
    # split over the devices under --devices N (else a no-op)
    return sharding.constrain_batch(
        (jnp.take(data[x], idx, axis=0), jnp.take(data[y], idx, axis=0))
    )


@functools.partial(
    jax.jit, static_argnames=("task", "setup"), donate_argnames=("state", "sums")
)
def train_chunk(
    state: TrainState,
    sums: dict[str, jax.Array],
    data: dict[str, jax.Array],
    key: jax.Array,
    epoch: jax.Array,
    start: jax.Array,
    hyper: dict[str, jax.Array],
    task: Task,
    setup: Setup,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """Steps ``start .. start + steps_per_call - 1`` of an epoch as one ``lax.scan``.

    Steps past the end of the epoch are skipped (``lax.cond``, only when
    ``steps_per_call`` does not divide ``steps_per_epoch``), so every call has the
    same shape and compiles once. Batch ``j`` of epoch ``e`` and its step key depend
    only on ``(key, e, j)``.

    Args:
      state: the training state (donated).
      sums: the epoch's running metric sums (donated).
      data: on-device ``train_x [N, H, W, C]``, ``train_y [N]`` (and ``valid_x``,
        ``valid_y`` when the task pairs a held-out batch).
      key: the run's PRNG key.
      epoch: int32 scalar, 0-based.
      start: int32 scalar, the first step of this call.
      hyper: float32 scalars of the epoch (``lr``, the task's own).
      task: the model (static).
      setup: static settings.

    Returns:
      ``(state, sums)`` after the chunk.
    """
    from jaxdarts.data import batch_indices

    k_train, k_valid, step_root, _ = epoch_keys(key, epoch)
    idx = batch_indices(k_train, setup.num_train, setup.batch_size)
    vidx = None
    if task.paired_valid:
        vidx = batch_indices(k_valid, setup.num_valid, setup.batch_size)

    def do_step(carry, j):
        st, sm = carry
        x, y = _gather(data, "train_x", "train_y", idx[j])
        vx = vy = None
        if vidx is not None:
            vx, vy = _gather(data, "valid_x", "valid_y", vidx[j])
        k = jax.random.fold_in(step_root, j)
        st, m = train_step(st, x, y, k, hyper, task, setup, vx, vy)
        return st, jax.tree.map(jnp.add, sm, m)

    def body(carry, j):
        if setup.steps_per_epoch % setup.steps_per_call == 0:  # never past the end
            return do_step(carry, j), None
        carry = jax.lax.cond(
            j < setup.steps_per_epoch, lambda c: do_step(c, j), lambda c: c, carry
        )
        return carry, None

    steps = start + jnp.arange(setup.steps_per_call, dtype=jnp.int32)
    (state, sums), _ = jax.lax.scan(body, (state, sums), steps)
    return state, sums


@functools.partial(jax.jit, static_argnames=("task", "setup"))
def _evaluate(state, images, labels, mask, key, task, setup):
    b = setup.eval_batch_size
    shaped = [a.reshape(-1, b, *a.shape[1:]) for a in (images, labels, mask)]
    keys = jax.random.split(key, shaped[0].shape[0])

    def body(sums, batch):
        *arrays, k = batch
        arrays = sharding.constrain_batch(arrays)  # --devices N
        m = eval_step(state, *arrays, k, task, setup)
        return jax.tree.map(jnp.add, sums, m), None

    zero = {
        "loss_sum": jnp.zeros((), jnp.float32),
        "correct": jnp.zeros((), jnp.int32),
        "correct5": jnp.zeros((), jnp.int32),
        "count": jnp.zeros((), jnp.int32),
    }
    sums, _ = jax.lax.scan(body, zero, (*shaped, keys))
    return sums


def pad_eval_set(
    images: np.ndarray, labels: np.ndarray, batch_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pads a set to a multiple of ``batch_size``; returns images, labels, mask."""
    n = len(labels)
    pad = -n % batch_size
    mask = np.concatenate([np.ones(n, bool), np.zeros(pad, bool)])
    images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
    labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
    return images, labels, mask


def _means(s: Mapping[str, Any]) -> dict[str, float]:
    n = max(int(s["count"]), 1)
    return {
        "loss": float(s["loss_sum"]) / n,
        "accuracy": int(s["correct"]) / n,
        "top5": int(s["correct5"]) / n,
    }


def evaluate(
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
    key: jax.Array,
    task: Task,
    setup: Setup,
) -> dict[str, float]:
    """Loss, top-1 and top-5 accuracy over a padded set (:func:`pad_eval_set`) in one
    compiled scan, in eval mode (BatchNorm running statistics).

    Returns:
      ``{"loss", "accuracy", "top5"}``: mean cross-entropy and fractions correct.
    """
    return _means(
        sharding.fetch(_evaluate(state, images, labels, mask, key, task, setup))
    )


# ------------------------------------------------------------ run folder, data


def commit(tree: Any, mesh: Any = None) -> Any:
    """Places ``tree`` on the first local device, committed (or replicated over
    ``mesh``): restored checkpoints are committed, and one placement for every
    argument keeps one compiled program per run, fresh or resumed."""
    if mesh is not None:
        return sharding.replicate(tree, mesh)
    return jax.device_put(tree, jax.local_devices()[0])


def data_mesh(devices: int | None, batch_size: int) -> Any:
    """``--devices N``: a mesh for data parallelism (None: one device)."""
    if devices is None:
        return None
    if devices < 1 or batch_size % devices:
        raise ValueError(
            f"--devices {devices} must be >= 1 and divide train.batch_size {batch_size}"
        )
    return sharding.make_mesh(devices)


def count_params(tree: Any) -> int:
    """Number of scalars in a parameter tree."""
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def default_out(*parts: str) -> str:
    """``runs/<parts...>-<YYYYmmdd-HHMMSS>``."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    *head, last = parts
    return os.path.join("runs", *head, f"{last}-{stamp}")


def _set_dotted(config: dict, dotted: str, value: Any) -> None:
    *head, last = dotted.split(".")
    for part in head:
        config = config[part]
    config[last] = value


def _get_dotted(config: Mapping, dotted: str) -> Any:
    for part in dotted.split("."):
        config = config[part]
    return config


def start_run(
    config: dict[str, Any],
    out: str | os.PathLike,
    *,
    resume: bool,
    overwrite: bool,
    may_change: Sequence[str] = (),
) -> tuple[dict[str, Any], Any]:
    """Checks the run folder before anything expensive.

    Returns:
      ``(config, rundir)``: on ``resume`` the saved config (with the keys of
      ``may_change`` taken from ``config``) and the opened
      :class:`~jaxdarts.runs.RunDir`; else ``config`` and the folder's path (see
      :func:`open_run`).

    Raises:
      RunExistsError: ``out`` holds something and neither ``resume`` nor
        ``overwrite``.
      ConfigMismatchError: ``resume`` with a config that differs from the saved one.
      FileNotFoundError: ``resume`` of a folder that is not a run folder.
    """
    from jaxdarts.runs import DEFAULT_RESUME_IGNORE, RunDir

    if resume:
        rundir = RunDir.resume(
            out, config, ignore=DEFAULT_RESUME_IGNORE + tuple(may_change)
        )
        merged = copy.deepcopy(rundir.config)
        for dotted in may_change:
            _set_dotted(merged, dotted, _get_dotted(config, dotted))
        return merged, rundir
    from jaxdarts.runs import check_out

    path = Path(out)
    check_out(path, overwrite=overwrite)
    return config, path


def open_run(config: dict[str, Any], rundir: Any, *, overwrite: bool) -> Any:
    """Creates the run folder of :func:`start_run` (once the data loaded) and sends
    the log to its ``log.txt``; returns the :class:`~jaxdarts.runs.RunDir`."""
    from jaxdarts.runs import RunDir, setup_logging

    if not isinstance(rundir, RunDir):
        rundir = RunDir.create(rundir, config, overwrite=overwrite)
    setup_logging(rundir.path)
    return rundir


# ------------------------------------------------------------------- the loop


@dataclasses.dataclass
class Job:
    """What :func:`fit` needs besides the state.

    Attributes:
      command: ``"pretrain"`` or ``"train"`` (progress bar, resume hint).
      task: the model.
      setup: static settings.
      optim: the config's ``optim`` group (``lr``, ``lr_min``).
      epochs: total epochs.
      data: on-device training arrays (see :func:`train_chunk`).
      eval_data: on-device padded ``(images, labels, mask)``.
      eval_name: metric prefix of the evaluated set (``"valid"`` or ``"test"``).
      rundir: the run folder.
      run_key: the run's PRNG key (set by :func:`run_task`).
      checkpoint_every: epochs between checkpoints.
      max_to_keep: checkpoints kept (None: all).
      mesh: ``--devices N`` mesh (None: one device).
      eval_before: also evaluate (epoch 0) before training.
      on_best: called with ``(state, epoch, eval metrics)`` when the evaluated
        accuracy improved.
      on_record: called with every ``metrics.jsonl`` record (``--tensorboard``).
    """

    command: str
    task: Task
    setup: Setup
    optim: Mapping[str, Any]
    epochs: int
    data: dict[str, jax.Array]
    eval_data: tuple[jax.Array, jax.Array, jax.Array]
    eval_name: str
    rundir: Any
    run_key: jax.Array | None = None
    checkpoint_every: int = 1
    max_to_keep: int | None = 2
    mesh: Any = None
    eval_before: bool = False
    on_best: Callable[[TrainState, int, dict[str, float]], None] | None = None
    on_record: Callable[[dict[str, Any]], None] | None = None

    def hyper(self, epoch: int) -> dict[str, float]:
        """The per-epoch scalars: ``lr`` and the task's own."""
        lr = cosine_lr(self.optim["lr"], self.optim["lr_min"], self.epochs, epoch)
        return {"lr": lr, **self.task.hyper(epoch, self.epochs)}


@dataclasses.dataclass
class Outcome:
    """Where :func:`fit` stopped.

    Attributes:
      state: the final state.
      epoch, step: the position (``step`` within ``epoch``; 0 at an epoch's end).
      finished: all epochs done.
      interrupted: stopped by Ctrl-C (or the ``interrupt`` object).
      best_acc, best_epoch: the best evaluated accuracy and its epoch.
      compile_s: seconds spent compiling in this process.
      wall_s: seconds of this call.
    """

    state: TrainState
    epoch: int
    step: int
    finished: bool
    interrupted: bool
    best_acc: float
    best_epoch: int
    compile_s: float
    wall_s: float


class _Compiled:
    """The chunk and the evaluation, compiled ahead of time (timed, announced)."""

    def __init__(self, job: Job, state: TrainState, sums: dict) -> None:
        t0 = time.perf_counter()
        log.info("compiling the training step and the evaluation...")
        hyper = _hyper_arrays(job.hyper(0), job.mesh)
        i0 = commit(jnp.int32(0), job.mesh)
        with sharding.use_mesh(job.mesh):
            self.chunk = train_chunk.lower(
                state, sums, job.data, job.run_key, i0, i0, hyper,
                task=job.task, setup=job.setup,
            ).compile()  # fmt: skip
            self.eval = _evaluate.lower(
                state, *job.eval_data, job.run_key, task=job.task, setup=job.setup
            ).compile()
        self.seconds = time.perf_counter() - t0
        log.info("compiled in %.1fs", self.seconds)
        # multi-host: line the processes up before the first collective (gloo gives
        # up after 30 s, and one process may have compiled from the cache)
        sharding.barrier("compiled")


def _hyper_arrays(hyper: Mapping[str, float], mesh: Any) -> dict[str, jax.Array]:
    return commit({k: np.float32(v) for k, v in hyper.items()}, mesh)


def _tree(pos: Mapping[str, Any]) -> dict[str, Any]:
    """The checkpoint of a loop position."""
    return {
        "state": pos["state"],
        "epoch": np.int32(pos["epoch"]),
        "step": np.int32(pos["step"]),
        "sums": pos["sums"],
        "best_acc": np.float64(pos["best_acc"]),
        "best_epoch": np.int32(pos["best_epoch"]),
    }


def _fresh(job: Job, state: TrainState) -> dict[str, Any]:
    sums = commit(zero_sums(job.task), job.mesh)
    return {"state": state, "epoch": 0, "step": 0, "sums": sums, "best_acc": -1.0,
            "best_epoch": 0}  # fmt: skip


def _restore(job: Job, ckpt: Any, state: TrainState) -> dict[str, Any] | None:
    """The latest checkpoint (metrics after it dropped), or None for a fresh start."""
    from jaxdarts.checkpoint import restore_newest_valid

    rundir = job.rundir
    found = restore_newest_valid(ckpt, _tree(_fresh(job, state)), warn=log.warning)
    if found is None:
        rundir.truncate_metrics(-1, key="epoch")
        return None
    r = found[1]
    r = {
        k: (v if k in ("state", "sums") else np.asarray(v).item()) for k, v in r.items()
    }
    rundir.truncate_metrics(r["epoch"], key="epoch")
    log.info(
        "resumed from epoch %d, step %d of %d",
        r["epoch"],
        r["step"],
        job.setup.steps_per_epoch,
    )
    return r


def _validate(job: Job, comp: _Compiled, state: TrainState, epoch: int):
    key = epoch_keys(job.run_key, epoch)[3]
    sums = comp.eval(state, *job.eval_data, key)
    return _means(sharding.fetch(sums))  # multi-host: gathered


def _run_epoch(job, comp, pos, bar, stop) -> tuple[float, int]:
    """Runs (the rest of) epoch ``pos["epoch"]``; returns (seconds, steps done)."""
    spe, t0, first = job.setup.steps_per_epoch, time.perf_counter(), pos["step"]
    hyper = _hyper_arrays(job.hyper(pos["epoch"]), job.mesh)
    epoch = commit(jnp.int32(pos["epoch"]), job.mesh)
    while pos["step"] < spe:
        start = commit(jnp.int32(pos["step"]), job.mesh)
        pos["state"], pos["sums"] = comp.chunk(
            pos["state"], pos["sums"], job.data, job.run_key, epoch, start, hyper
        )
        done = min(job.setup.steps_per_call, spe - pos["step"])
        pos["step"] += done
        bar.update(done)
        if pos["step"] < spe and stop():
            break
    jax.block_until_ready(pos["state"])
    return time.perf_counter() - t0, pos["step"] - first


def _epoch_record(job, pos, v, seconds, steps, compile_s) -> dict[str, Any]:
    s = sharding.fetch(pos["sums"])  # multi-host: gathered
    n = max(int(s["count"]), 1)
    e, ev = pos["epoch"], job.eval_name
    record = {"epoch": e + 1, "step": (e + 1) * job.setup.steps_per_epoch}
    record.update(job.hyper(e))
    record["train_loss"] = float(s["loss_sum"]) / n
    record["train_acc"] = int(s["correct"]) / n
    for k in job.task.extra_sums:
        record[k.removesuffix("_sum")] = float(s[k]) / n
    record.update({f"{ev}_loss": v["loss"], f"{ev}_acc": v["accuracy"]})
    record[f"{ev}_top5"] = v["top5"]
    record[f"best_{ev}_acc"] = pos["best_acc"]
    record["images_per_s"] = steps * job.setup.batch_size / max(seconds, 1e-9)
    record["compile_s"] = compile_s
    record["time"] = seconds
    return record


def _log_epoch(job: Job, record: dict[str, Any], improved: bool) -> None:
    ev = job.eval_name
    log.info(
        "epoch %d/%d: lr %.5f, train loss %.4f acc %.2f%%, %s loss %.4f acc %.2f%%%s, "
        "%.0f img/s",
        record["epoch"],
        job.epochs,
        record["lr"],
        record["train_loss"],
        100 * record["train_acc"],
        ev,
        record[f"{ev}_loss"],
        100 * record[f"{ev}_acc"],
        " (best)" if improved else "",
        record["images_per_s"],
    )


def _evaluate_before(job: Job, comp: _Compiled, state: TrainState) -> None:
    t0 = time.perf_counter()
    v = _validate(job, comp, state, 0)
    ev = job.eval_name
    job.rundir.append_metrics(
        {
            "epoch": 0,
            "step": 0,
            f"{ev}_loss": v["loss"],
            f"{ev}_acc": v["accuracy"],
            f"{ev}_top5": v["top5"],
            "time": time.perf_counter() - t0,
        }
    )
    log.info(
        "before training: %s loss %.4f, %s acc %.2f%%",
        ev,
        v["loss"],
        ev,
        100 * v["accuracy"],
    )


def _finish_epoch(job, comp, pos, seconds, steps, compile_s) -> None:
    v = _validate(job, comp, pos["state"], pos["epoch"] + 1)
    improved = v["accuracy"] > pos["best_acc"]
    if improved:
        pos["best_acc"], pos["best_epoch"] = v["accuracy"], pos["epoch"] + 1
        if job.on_best is not None:
            job.on_best(pos["state"], pos["epoch"] + 1, v)
    record = _epoch_record(job, pos, v, seconds, steps, compile_s)
    job.rundir.append_metrics(record)
    if job.on_record is not None:
        job.on_record(record)
    _log_epoch(job, record, improved)
    pos["epoch"], pos["step"] = pos["epoch"] + 1, 0
    pos["sums"] = commit(zero_sums(job.task), job.mesh)


def _initial_position(job: Job, ckpt: Any, state: TrainState, resume: bool) -> dict:
    pos = _fresh(job, commit(state, job.mesh))
    restored = _restore(job, ckpt, pos["state"]) if resume else None
    if restored is None:
        return {**pos, "fresh": True}
    restored["state"] = commit(restored["state"], job.mesh)
    restored["sums"] = commit(restored["sums"], job.mesh)
    return {**restored, "fresh": False}


def fit(
    job: Job,
    state: TrainState,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    interrupt: Any = None,
) -> Outcome:
    """Trains ``job.epochs`` epochs (or up to ``stop_after``), resuming from the run
    folder's latest checkpoint when ``resume``.

    After every epoch: evaluation, one ``metrics.jsonl`` line, ``job.on_best`` if
    the accuracy improved, and a checkpoint every ``job.checkpoint_every`` epochs
    and at the last one. A stop request (Ctrl-C, or ``interrupt.requested``) is
    polled after every chunk; the position is then checkpointed (mid-epoch too) and
    a later resume continues bit-exactly.
    """
    from jaxdarts.runs import GracefulInterrupt, progress

    t_start = time.perf_counter()
    ckpt = job.rundir.checkpointer(max_to_keep=job.max_to_keep)
    pos = _initial_position(job, ckpt, state, resume)
    comp = _Compiled(job, pos["state"], pos["sums"])
    compile_s = comp.seconds
    if pos["fresh"] and job.eval_before:
        _evaluate_before(job, comp, pos["state"])
    spe = job.setup.steps_per_epoch
    stop_at = job.epochs if stop_after is None else min(stop_after, job.epochs)
    bar = progress(
        job.epochs * spe,
        job.command,
        initial=pos["epoch"] * spe + pos["step"],
        unit="step",
    )
    guard = GracefulInterrupt() if interrupt is None else None
    flag = interrupt if interrupt is not None else guard
    interrupted = False

    def save() -> None:
        ckpt.save(pos["epoch"] * spe + pos["step"], _tree(pos))

    try:
        if guard is not None:
            guard.__enter__()
        while pos["epoch"] < stop_at:
            seconds, steps = _run_epoch(job, comp, pos, bar, lambda: flag.requested)
            if pos["step"] < spe:  # stopped inside the epoch
                interrupted = True
                save()
                break
            _finish_epoch(job, comp, pos, seconds, steps, compile_s)
            compile_s = 0.0
            bar.set_postfix(epoch=pos["epoch"], best=f"{pos['best_acc']:.3f}")
            stop = bool(flag.requested)
            if (
                pos["epoch"] % job.checkpoint_every == 0
                or pos["epoch"] == stop_at
                or stop
            ):
                save()
            if stop:
                interrupted = pos["epoch"] < job.epochs
                break
    finally:
        bar.close()
        if guard is not None:
            guard.__exit__(None, None, None)
        ckpt.close()
    return Outcome(
        state=pos["state"],
        epoch=pos["epoch"],
        step=pos["step"],
        finished=pos["epoch"] >= job.epochs,
        interrupted=interrupted,
        best_acc=pos["best_acc"],
        best_epoch=pos["best_epoch"],
        compile_s=comp.seconds,
        wall_s=time.perf_counter() - t_start,
    )


def _tensorboard(job: Job) -> Any:
    """A TensorBoard writer under ``<run>/tb`` fed by every epoch record."""
    from jaxdarts import runs

    logger_cls = getattr(runs, "TensorBoardLogger", None)
    if logger_cls is None:
        raise RuntimeError("--tensorboard needs jaxdarts.runs.TensorBoardLogger")
    board = logger_cls(job.rundir.path / "tb")
    job.on_record = lambda record: board.log(record, record["step"])
    return board


def run_task(
    command: str,
    config: dict[str, Any],
    out: str | os.PathLike,
    make_job: Callable[[dict, Any, Any, Any], Job],
    finish: Callable[[Job, Outcome], dict[str, Any]],
    *,
    resume: bool = False,
    overwrite: bool = False,
    stop_after: int | None = None,
    interrupt: Any = None,
    devices: int | None = None,
    tensorboard: bool = False,
) -> dict[str, Any]:
    """A whole run of a command: check the folder, load the data, create the folder,
    build the job and the state, :func:`fit`, and ``finish`` (result files).

    Args:
      command: ``"pretrain"`` or ``"train"`` (its ``RESUME_MAY_CHANGE`` keys).
      config: the resolved config.
      out: the run folder.
      make_job: ``(config, dataset, rundir, mesh) -> Job`` (``run_key`` is set here).
      finish: ``(job, outcome) -> result`` once every epoch is done.
      resume, overwrite, stop_after, interrupt, devices: see the commands' ``run``.
      tensorboard: also write every epoch's metrics as TensorBoard scalars under
        ``<run>/tb`` (the ``tensorboard`` extra).

    Returns:
      ``finish``'s result, or for a stopped run :func:`stopped_result`'s.
    """
    from jaxdarts import config as config_lib
    from jaxdarts.data import load_dataset

    may_change = config_lib.config_module(command).RESUME_MAY_CHANGE
    config, rundir = start_run(
        config, out, resume=resume, overwrite=overwrite, may_change=may_change
    )
    mesh = data_mesh(devices, config["train"]["batch_size"])
    ds = load_dataset(config["data"]["dataset"], config["data"]["data_dir"])
    rundir = open_run(config, rundir, overwrite=overwrite)
    job = make_job(config, ds, rundir, mesh)
    init_key, run_key = jax.random.split(jax.random.key(config["seed"]))
    job.run_key = commit(run_key, mesh)
    state = create_state(job.task, init_key, ds.image_shape, job.setup)
    log.info("%.3fM parameters", count_params(state.params) / 1e6)
    outcome = fit(job, state, resume=resume, stop_after=stop_after, interrupt=interrupt)
    if not outcome.finished:
        return stopped_result(job, outcome)
    if not rundir.writer:  # multi-host: process 0 reads and writes the results
        return {"epochs": outcome.epoch, "run_dir": str(rundir.path)}
    return finish(job, outcome)


def stopped_result(job: Job, outcome: Outcome) -> dict[str, Any]:
    """What a stopped run returns (and logs): where it stopped, how to continue."""
    spe = job.setup.steps_per_epoch
    why = "interrupted" if outcome.interrupted else "stopped"
    log.info(
        "%s at epoch %d, step %d of %d; checkpoint saved. Continue with: "
        "python -m jaxdarts.%s --resume %s",
        why,
        outcome.epoch,
        outcome.step,
        spe,
        job.command,
        job.rundir.path,
    )
    return {
        "interrupted": True,
        "ctrl_c": outcome.interrupted,
        "epoch": outcome.epoch,
        "step": outcome.step,
        "run_dir": str(job.rundir.path),
    }


def run_result(job: Job, outcome: Outcome) -> tuple[dict[str, Any], list[dict]]:
    """The fields every finished run's ``result.json`` has, and the epoch records.

    Fields: ``final_<eval>_acc``/``_loss``, ``best_<eval>_acc`` and its epoch,
    ``final_train_loss``, ``epochs``, ``train_time_s`` (training only, compilation
    excluded), ``compile_s`` (this process), ``images_per_s`` (median over epochs),
    ``run_dir``.
    """
    ev = job.eval_name
    records = [m for m in job.rundir.read_metrics() if m["epoch"] > 0]
    final = records[-1]
    result = {
        f"final_{ev}_acc": final[f"{ev}_acc"],
        f"final_{ev}_loss": final[f"{ev}_loss"],
        f"best_{ev}_acc": outcome.best_acc,
        f"best_{ev}_epoch": outcome.best_epoch,
        "final_train_loss": final["train_loss"],
        "epochs": job.epochs,
        "train_time_s": float(sum(m["time"] for m in records)),
        "compile_s": outcome.compile_s,
        "images_per_s": float(np.median([m["images_per_s"] for m in records])),
        "run_dir": str(job.rundir.path),
    }
    return result, records


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def format_summary(title: str, rows: Sequence[tuple[str, str]], wall_s: float) -> str:
    """A short end-of-run summary: a title line with the wall time, then aligned
    ``name  value`` rows."""
    width = max((len(k) for k, _ in rows), default=0)
    lines = [f"{title} (wall time {_duration(wall_s)})"]
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)


# ------------------------------------------------------- the two commands' CLI


#: Flags both commands have: (option, argparse keywords, config key).
COMMON_FLAGS: tuple[tuple[str, dict[str, Any], str], ...] = (
    ("--dataset", {"help": "digits, cifar10, a TFDS name or npz:PATH"}, "data.dataset"),
    ("--data-dir", {"help": "TFDS data folder"}, "data.data_dir"),
    ("--seed", {"type": int, "help": "seed of the whole run"}, "seed"),
    ("--epochs", {"type": int, "help": "training epochs"}, "train.epochs"),
    ("--batch-size", {"type": int, "help": "images per step"}, "train.batch_size"),
    ("--cutout", {"type": int, "help": "cutout side (0: off)"}, "augment.cutout"),
)


def add_flags(p: Any, flags: Sequence[tuple[str, dict[str, Any], str]]) -> dict:
    """Adds ``(option, argparse keywords, config key)`` flags to parser ``p``;
    returns argparse dest -> config key (for :func:`config_for_run`)."""
    dests = {}
    for option, kwargs, key in flags:
        # "%(default).0s" prints nothing and keeps argparse from adding "None"
        text = f"{kwargs['help']} (sets {key}; default: the preset's)%(default).0s"
        dests[p.add_argument(option, **{**kwargs, "help": text}).dest] = key
    return dests


def build_parser(
    command: str, description: str, default_out: str, flags: Sequence[tuple]
) -> tuple[Any, dict[str, str]]:
    """A command's parser: ``cli.parser``, ``cli.add_run_args``, the command's own
    flags, :data:`COMMON_FLAGS`, ``--stop-after`` and ``--no-compile-cache``.

    Returns:
      ``(parser, dest -> config key)``.
    """
    from jaxdarts import cli

    p = cli.parser(command, description)
    cli.add_run_args(p, default_out)
    dests = add_flags(p, (*flags, *COMMON_FLAGS))
    p.add_argument(
        "--stop-after",
        type=int,
        metavar="N",
        help="stop with a checkpoint after epoch N (continue it with --resume)",
    )
    p.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not use JAX's persistent compilation cache",
    )
    return p, dests


def command_main(
    command: str,
    parser: tuple[Any, dict[str, str]],
    run: Callable[..., dict[str, Any]],
    argv: Sequence[str] | None,
    extra: Callable[[Any], dict[str, Any]] | None = None,
) -> int:
    """Parse, build the config (``--print-config`` prints it), run; the exit status.

    Args:
      command: ``"pretrain"`` or ``"train"``.
      parser: :func:`build_parser`'s result.
      run: the command's ``run(config, out, resume, overwrite, ...)``.
      argv: the arguments (None: ``sys.argv``).
      extra: parsed args -> config values the command resolves itself.
    """
    from jaxdarts import cli

    p, dests = parser
    args = p.parse_args(argv)
    config = config_for_run(command, args, dests, extra(args) if extra else None)
    if args.print_config:
        cli.print_config(command, config)
        return 0
    return run_command(run, config, args)


def _check_run_args(args: Any) -> None:
    from jaxdarts import cli
    from jaxdarts.cli import UsageError

    if args.stop_after is not None and args.stop_after < 1:
        raise UsageError(f"--stop-after must be >= 1, got {args.stop_after}")
    if args.resume and args.out and Path(args.out) != Path(args.resume):
        raise UsageError("give either --out (new run) or --resume DIR, not both")
    if args.resume and args.overwrite:
        raise UsageError("--overwrite cannot be combined with --resume")
    if args.resume and Path(args.resume).is_dir():
        cli.check_resume_dir(args.resume)  # a run folder we can write in


def _saved_overrides(command: str, args: Any) -> tuple[str, dict[str, Any]]:
    """``--resume DIR``: the saved config's preset and every value as an override
    (``null`` as text, so that a saved null is kept)."""
    import json

    from jaxdarts import cli
    from jaxdarts import config as config_lib
    from jaxdarts.cli import UsageError

    path = Path(args.resume) / "config.json"
    if not path.is_file():
        raise UsageError(
            f"cannot resume {args.resume}: no config.json there, so it is not a "
            "run folder (start a new run with --out instead)"
        )
    saved = json.loads(path.read_text())
    cli.check_saved_command(command, args.resume, saved)
    preset = saved.get("preset", "paper")
    if args.preset not in (None, "paper", preset):
        raise UsageError(
            f"cannot resume {args.resume} with --preset {args.preset}: it was "
            f"started with {preset!r}"
        )
    schema = config_lib.config_module(command).SCHEMA
    flat = config_lib.flatten(saved, schema)
    flat.pop("preset", None)
    return preset, {k: ("null" if v is None else v) for k, v in flat.items()}


def config_for_run(
    command: str,
    args: Any,
    flags: Mapping[str, str],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The validated config of a ``pretrain``/``train`` command line.

    A new run: ``--preset`` + flags + ``extra`` + ``--set``. ``--resume DIR``: the
    saved config with the flags and ``--set`` given on top (the run then refuses
    any difference but the keys its config module allows to change).

    Args:
      command: ``"pretrain"`` or ``"train"``.
      args: parsed arguments (``cli.parser`` + ``cli.add_run_args`` +
        :func:`add_command_args`).
      flags: argparse dest -> dotted config key.
      extra: dotted key -> value, resolved by the command (e.g. the genotype).

    Raises:
      UsageError: bad flags, an unknown key or a bad value.
    """
    from jaxdarts import config as config_lib
    from jaxdarts.cli import UsageError

    _check_run_args(args)
    preset, overrides = args.preset, {}
    if args.resume:
        preset, overrides = _saved_overrides(command, args)
    for dest, key in flags.items():
        if getattr(args, dest, None) is not None:
            overrides[key] = getattr(args, dest)
    overrides.update(extra or {})
    try:
        return config_lib.load(
            command, preset=preset, overrides=overrides, sets=args.set
        )
    except config_lib.ConfigError as e:
        raise UsageError(str(e)) from None


def run_command(run: Callable[..., dict[str, Any]], config: dict, args: Any) -> int:
    """Runs ``run(config, out, ...)`` for a command line; returns the exit status.

    0: done, or stopped by ``--stop-after``; 130 (``cli.EXIT_INTERRUPTED``): stopped
    by Ctrl-C once the checkpoint was saved. A run folder that exists, a changed
    config on resume or missing data raise ``UsageError`` (exit 2, nothing lost).
    """
    from jaxdarts.cli import EXIT_INTERRUPTED, UsageError
    from jaxdarts.data import DataNotFoundError
    from jaxdarts.runs import (
        ConfigMismatchError,
        RunExistsError,
        enable_compilation_cache,
        setup_logging,
    )
    from jaxdarts.sharding import maybe_initialize_distributed

    maybe_initialize_distributed()  # multi-host runs: see README "Scaling out"
    if getattr(args, "tensorboard", False):
        import jaxdarts.runs

        check = getattr(jaxdarts.runs, "check_tensorboard", None)
        try:
            if check is None:
                raise RuntimeError("this jaxdarts has no TensorBoard logger")
            check()
        except (ImportError, RuntimeError, ValueError) as e:
            raise UsageError(f"--tensorboard: {e}") from None
    setup_logging(None)
    if not args.no_compile_cache:
        enable_compilation_cache()
    bad_input = (RunExistsError, ConfigMismatchError, DataNotFoundError)
    try:
        result = run(config, args.resume or args.out, resume=bool(args.resume),
                     overwrite=args.overwrite, stop_after=args.stop_after,
                     devices=args.devices,
                     tensorboard=bool(getattr(args, "tensorboard", False)))  # fmt: skip
    except (*bad_input, FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    if result.get("ctrl_c"):
        return EXIT_INTERRUPTED
    return 0
