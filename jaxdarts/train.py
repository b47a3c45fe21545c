"""Trains the evaluation network of a genotype from scratch (the paper's final step).

Command line::

    python -m jaxdarts.train --genotype disc-nwot                    # paper, CIFAR-10
    python -m jaxdarts.train --genotype disc-nwot --preset quick     # digits, CPU
    python -m jaxdarts.train --genotype runs/x/genotype.json --auxiliary --drop-path 0.2
    python -m jaxdarts.train --resume runs/train/disc-nwot-20250101-120000

Preset ``paper`` (decisions.md, "Evaluation network"): CIFAR-10, the full train split
with crop + flip + cutout 16, 600 epochs, batch 96, 20 cells of 36 channels, SGD with
momentum 0.9 and weight decay 3e-4 on every parameter, gradient norm clipped to 5,
learning rate 0.025 cosine-annealed to 0 and stepped per epoch, the reference's
dropout 0.2 after skip connections; the test split is evaluated after every epoch.
Preset ``quick``: scikit-learn digits (8x8), 3 cells of 8 channels, 10 epochs, crop
(pad 1) without flip or cutout; about a minute on a 2-core CPU, most of it compiling.

The optimiser follows ``torch.optim.SGD`` after ``clip_grad_norm_``: the raw gradient
is clipped first, then ``weight_decay * w`` is added, then the momentum buffer
``b = momentum * b + g`` (``b = g`` at the first step) and ``w -= lr * b``.

The run folder (``--out``, default ``runs/train/<genotype>-<time>``) receives
``config.json``, ``genotype.json``, ``metrics.jsonl`` (one line per epoch),
``log.txt``, ``checkpoints/`` (Orbax; every ``checkpoint_every`` epochs and on
Ctrl-C), and at the end ``result.json`` and ``curves.png``. ``result.json`` reports
``test_accuracy`` at the final epoch (decisions.md) and, clearly named, the
reference's figure ``best_test_accuracy``: the best epoch chosen on the test set
itself.

Augmentation (crop, flip, normalisation, cutout) runs on the device inside the jitted
step; the dataset is copied to the device once and batches are gathered by index
inside ``jit``. All randomness of epoch ``e`` derives from ``(seed, e)``, so a
resumed run (``--resume``) ends with bitwise the same weights as an uninterrupted one.

References:
  Liu et al., "DARTS: Differentiable Architecture Search", ICLR 2019 (train.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdarts import sharding
from jaxdarts.evalnet import EvalNet
from jaxdarts.genotypes import (
    Genotype,
    from_json_dict,
    load_genotype,
    save_genotype_json,
    to_darts_string,
    to_json_dict,
)

__all__ = [
    "PRESETS",
    "TrainState",
    "Setup",
    "make_config",
    "make_setup",
    "create_train_state",
    "torch_default_init",
    "train_step",
    "eval_step",
    "train_epoch",
    "evaluate",
    "run",
    "main",
]

log = logging.getLogger("jaxdarts.train")

_BASE: dict[str, Any] = {
    "preset": "paper",
    "genotype": None,  # resolved genotype (to_json_dict form); set from --genotype
    "genotype_source": None,  # what --genotype said (name, file or string)
    "dataset": "cifar10",
    "data_dir": None,
    "seed": 0,
    "epochs": 600,
    "batch_size": 96,
    "eval_batch_size": 250,
    "channels": 36,
    "layers": 20,
    "auxiliary": False,
    "auxiliary_weight": 0.4,
    "drop_path": 0.0,  # DARTS: 0.2, ramped linearly from 0 over the epochs
    "identity_dropout": 0.2,  # the reference's dropout after skip connections
    "cutout": 16,
    "crop_pad": None,  # None: data.default_crop_pad(image size), 4 for 32x32
    "flip": True,
    "lr": 0.025,
    "lr_min": 0.0,
    "momentum": 0.9,
    "weight_decay": 3e-4,
    "grad_clip": 5.0,  # 0 disables
    "bf16": False,
    "impl": "auto",
    "init": "host",  # "host": PyTorch init drawn with NumPy (no compile); "flax"
    "steps_per_call": 64,  # train steps per jitted call (one lax.scan)
    "checkpoint_every": 1,  # epochs
    "max_to_keep": 2,
}

#: Preset name -> overrides of the base config.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "quick": {
        "preset": "quick",
        "dataset": "digits",
        "epochs": 10,
        "batch_size": 32,
        "eval_batch_size": 360,
        "channels": 8,
        "layers": 3,
        "cutout": 0,
        "flip": False,  # digits are not mirror-symmetric
        "lr": 0.05,
        "steps_per_call": 45,
    },
}

# Keys that may differ between a run and its --resume.
_RESUME_IGNORE = ("data_dir", "genotype_source")

_POSITIVE_INTS = ("epochs", "batch_size", "eval_batch_size", "channels", "layers")


# ----------------------------------------------------------------------- config


def _check_config(config: dict[str, Any]) -> None:
    """Raises ValueError naming the first bad value."""
    for key in _POSITIVE_INTS + ("steps_per_call", "checkpoint_every", "max_to_keep"):
        v = config[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{key} must be a positive integer, got {v!r}")
    if isinstance(config["seed"], bool) or not isinstance(config["seed"], int):
        raise ValueError(f"seed must be an integer, got {config['seed']!r}")
    for key in ("auxiliary", "flip", "bf16"):
        if not isinstance(config[key], bool):
            raise ValueError(f"{key} must be true or false, got {config[key]!r}")
    for key in ("lr",):
        if not _is_real(config[key]) or config[key] <= 0:
            raise ValueError(f"{key} must be a positive number, got {config[key]!r}")
    for key in ("lr_min", "weight_decay", "grad_clip", "auxiliary_weight"):
        if not _is_real(config[key]) or config[key] < 0:
            raise ValueError(f"{key} must be a number >= 0, got {config[key]!r}")
    for key in ("momentum", "drop_path", "identity_dropout"):
        if not _is_real(config[key]) or not 0 <= config[key] < 1:
            raise ValueError(f"{key} must be in [0, 1), got {config[key]!r}")
    if isinstance(config["cutout"], bool) or not isinstance(config["cutout"], int):
        raise ValueError(f"cutout must be an integer >= 0, got {config['cutout']!r}")
    if config["cutout"] < 0:
        raise ValueError(f"cutout must be >= 0 (0 = off), got {config['cutout']}")
    cp = config["crop_pad"]
    if cp is not None and (isinstance(cp, bool) or not isinstance(cp, int) or cp < 0):
        raise ValueError(f"crop_pad must be null (auto) or an integer >= 0, got {cp!r}")
    if config["init"] not in ("host", "flax"):
        raise ValueError(f"init must be 'host' or 'flax', got {config['init']!r}")
    if config["impl"] != "auto":
        from jaxdarts.ops import resolve_impl

        resolve_impl(config["impl"])  # ValueError naming the known implementations
    if not isinstance(config["dataset"], str) or not config["dataset"].strip():
        raise ValueError(f"dataset must be a non-empty name, got {config['dataset']!r}")
    if config["genotype"] is None:
        raise ValueError(
            "a genotype is needed: --genotype NAME|FILE.json|'Genotype(...)'"
        )
    from_json_dict(config["genotype"])  # validates ops and node indices


def _is_real(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def make_config(preset: str = "paper", **overrides: Any) -> dict[str, Any]:
    """The resolved, validated config of a training run.

    Args:
      preset: ``"paper"`` or ``"quick"`` (see :data:`PRESETS`).
      **overrides: config values; ``genotype`` may be a published name, a genotype
        JSON file, a DARTS ``Genotype(...)`` string, a :class:`Genotype` or a
        ``to_json_dict`` dict. ``None`` values are ignored.

    Returns:
      A JSON-able dict (the genotype in ``to_json_dict`` form).

    Raises:
      ValueError: unknown preset or key, bad value, or an invalid genotype.
      FileNotFoundError: a genotype file that does not exist.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; presets are {sorted(PRESETS)}")
    config = dict(_BASE)
    config.update(PRESETS[preset])
    config["preset"] = preset
    for key, value in overrides.items():
        if key not in config:
            raise ValueError(
                f"unknown config key {key!r}; known keys: {sorted(config)}"
            )
        if value is None and key not in ("crop_pad", "data_dir"):
            continue
        config[key] = value
    g = config["genotype"]
    if g is not None and not isinstance(g, dict):
        if config.get("genotype_source") is None or "genotype" in overrides:
            config["genotype_source"] = g if isinstance(g, str) else to_darts_string(g)
        if isinstance(g, str):
            g = load_genotype(g)
        config["genotype"] = to_json_dict(g)
    for key in ("lr", "lr_min", "weight_decay", "grad_clip", "momentum"):
        if isinstance(config[key], int) and not isinstance(config[key], bool):
            config[key] = float(config[key])
    _check_config(config)
    return config


def config_genotype(config: dict[str, Any]) -> Genotype:
    """The genotype of a resolved config."""
    return from_json_dict(config["genotype"])


# ------------------------------------------------------------------ train state


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training.

    Attributes:
      params: network parameters (float32).
      batch_stats: BatchNorm running statistics.
      opt_state: optimiser state (the momentum buffers).
    """

    params: Any
    batch_stats: Any
    opt_state: Any


@dataclasses.dataclass(frozen=True)
class Setup:
    """Static (hashable) settings of the jitted functions; see :func:`make_setup`.

    The learning rate and the drop-path probability are arguments of the jitted
    functions instead, so runs that differ only in epochs or schedule share one
    compilation. ``drop_path > 0`` switches drop-path on.
    """

    model: EvalNet
    num_train: int
    batch_size: int
    steps_per_epoch: int
    steps_per_call: int
    momentum: float
    weight_decay: float
    grad_clip: float
    auxiliary_weight: float
    drop_path: float
    crop_pad: int
    flip: bool
    cutout: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    eval_batch_size: int


def make_model(config: dict[str, Any], num_classes: int) -> EvalNet:
    """The evaluation network of a config."""
    return EvalNet(
        config_genotype(config),
        channels=config["channels"],
        layers=config["layers"],
        num_classes=num_classes,
        auxiliary=config["auxiliary"],
        drop_path=config["drop_path"],
        identity_dropout=config["identity_dropout"],
        impl=config["impl"],
        dtype=jnp.bfloat16 if config["bf16"] else jnp.float32,
    )


def make_setup(
    config: dict[str, Any],
    image_shape: tuple[int, int, int],
    num_classes: int,
    num_train: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> Setup:
    """Static settings for the jitted functions of a run.

    Raises:
      ValueError: fewer train images than one batch.
    """
    from jaxdarts.data import default_crop_pad

    steps = num_train // config["batch_size"]
    if steps < 1:
        raise ValueError(
            f"batch_size {config['batch_size']} is larger than the {num_train} "
            "training images"
        )
    crop_pad = config["crop_pad"]
    if crop_pad is None:
        crop_pad = default_crop_pad(min(image_shape[0], image_shape[1]))
    return Setup(
        model=make_model(config, num_classes),
        num_train=int(num_train),
        batch_size=config["batch_size"],
        steps_per_epoch=steps,
        steps_per_call=min(config["steps_per_call"], steps),
        momentum=float(config["momentum"]),
        weight_decay=float(config["weight_decay"]),
        grad_clip=float(config["grad_clip"]),
        auxiliary_weight=float(config["auxiliary_weight"]),
        drop_path=float(config["drop_path"]),
        crop_pad=int(crop_pad),
        flip=bool(config["flip"]),
        cutout=int(config["cutout"]),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        eval_batch_size=config["eval_batch_size"],
    )


def make_optimizer(setup: Setup | dict[str, Any]) -> optax.GradientTransformation:
    """PyTorch SGD after ``clip_grad_norm_``, without the learning rate.

    Returns the chain clip -> add ``weight_decay * w`` (every parameter) -> momentum
    trace; the caller scales by ``-lr``.
    """

    def get(k):
        return setup[k] if isinstance(setup, dict) else getattr(setup, k)

    parts = []
    if get("grad_clip") > 0:
        parts.append(optax.clip_by_global_norm(get("grad_clip")))
    if get("weight_decay") > 0:
        parts.append(optax.add_decayed_weights(get("weight_decay")))
    if get("momentum") > 0:
        parts.append(optax.trace(decay=get("momentum"), nesterov=False))
    return optax.chain(*parts)


def learning_rate(config: dict[str, Any], epoch: int) -> float:
    """Cosine annealing stepped per epoch (``CosineAnnealingLR(T_max=epochs)``).

    Args:
      config: resolved config (``lr``, ``lr_min``, ``epochs``).
      epoch: 0-based epoch.

    Returns:
      ``lr_min + (lr - lr_min) * (1 + cos(pi * epoch / epochs)) / 2``.
    """
    lo, hi = config["lr_min"], config["lr"]
    return lo + 0.5 * (hi - lo) * (1 + math.cos(math.pi * epoch / config["epochs"]))


def drop_path_prob(config: dict[str, Any], epoch: int) -> float:
    """DARTS' linear drop-path ramp: ``drop_path * epoch / epochs``."""
    return config["drop_path"] * epoch / config["epochs"]


def torch_default_init(abstract: Any, seed: int | Sequence[int]) -> Any:
    """PyTorch's default initialisation of a Linen parameter tree, drawn on the host.

    Equivalent to the Linen initialisers of :mod:`jaxdarts.ops` and
    :mod:`jaxdarts.evalnet` (PyTorch defaults), but drawn with NumPy: on XLA:CPU a
    jitted ``model.init`` spends most of its time compiling one threefry kernel per
    parameter (28 s for a 5-cell network here), this takes milliseconds.

    Rules, by leaf name: ``kernel`` / ``depthwise`` ``[..., fan_out]``:
    ``U(+-1/sqrt(fan_in))`` with ``fan_in = prod(shape[:-1])`` (conv, 1x1 conv,
    depthwise conv, linear); ``bias`` next to a ``kernel``: ``U(+-1/sqrt(fan_in))``
    (linear); ``scale`` / ``bias`` without a kernel: 1 / 0 (BatchNorm).

    Args:
      abstract: nested dict of ``jax.ShapeDtypeStruct`` (``jax.eval_shape`` of
        ``model.init(...)["params"]``).
      seed: NumPy seed (an int or a sequence of ints, e.g. a JAX key's data).

    Returns:
      The same tree with float32 NumPy arrays.

    Raises:
      ValueError: a leaf name the rules do not cover.
    """
    rng = np.random.default_rng(seed)

    def uniform(shape, fan_in):
        bound = 1.0 / math.sqrt(fan_in)
        return rng.uniform(-bound, bound, shape).astype(np.float32)

    def walk(node, path):
        out = {}
        kernel = node.get("kernel")
        for name in sorted(node):
            leaf = node[name]
            where = "/".join((*path, name))
            if isinstance(leaf, dict):
                out[name] = walk(leaf, (*path, name))
            elif name in ("kernel", "depthwise"):
                out[name] = uniform(leaf.shape, int(np.prod(leaf.shape[:-1])))
            elif name == "bias" and kernel is not None:
                out[name] = uniform(leaf.shape, int(np.prod(kernel.shape[:-1])))
            elif name == "bias":
                out[name] = np.zeros(leaf.shape, np.float32)
            elif name == "scale":
                out[name] = np.ones(leaf.shape, np.float32)
            else:
                raise ValueError(f"no host init rule for parameter {where}")
        return out

    return walk(abstract, ())


def create_train_state(
    key: jax.Array,
    config: dict[str, Any],
    genotype: Genotype | None,
    image_shape: tuple[int, int, int],
    num_classes: int,
) -> TrainState:
    """Initialises the network (PyTorch-style init) and the optimiser.

    ``config["init"]`` chooses ``"host"`` (:func:`torch_default_init`, no
    compilation; default) or ``"flax"`` (the modules' own initialisers under
    ``jit``); both draw from the same distributions.

    Args:
      key: PRNG key of the parameter init.
      config: resolved config (:func:`make_config`).
      genotype: the genotype (``None``: the config's).
      image_shape: ``(H, W, C)`` of the images.
      num_classes: classifier outputs.

    Returns:
      The initial :class:`TrainState` (BatchNorm running mean 0, variance 1).
    """
    if genotype is not None:
        config = dict(config, genotype=to_json_dict(genotype))
    model = make_model(config, num_classes)
    x = jnp.zeros((2, *image_shape), jnp.float32)
    rngs = {"params": key, "noise": jax.random.fold_in(key, 1)}
    if config.get("init", "host") == "flax":
        variables = jax.jit(lambda r, x: model.init(r, x))(rngs, x)
        params = variables["params"]
        batch_stats = variables.get("batch_stats", {})
    else:
        abstract = jax.eval_shape(lambda r, x: model.init(r, x), rngs, x)
        seed = np.asarray(jax.random.key_data(key)).ravel().tolist()
        params = jax.tree.map(jnp.asarray, torch_default_init(abstract["params"], seed))
        batch_stats = jax.tree_util.tree_map_with_path(
            lambda p, a: (jnp.ones if p[-1].key == "var" else jnp.zeros)(
                a.shape, a.dtype
            ),
            abstract.get("batch_stats", {}),
        )
    return TrainState(
        params=params,
        batch_stats=batch_stats,
        opt_state=make_optimizer(config).init(params),
    )


# ------------------------------------------------------------------------ steps


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def train_step(
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    lr: float | jax.Array,
    drop_prob: float | jax.Array,
    setup: Setup,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One SGD step on one batch, with on-device augmentation.

    Args:
      state: the training state.
      images: ``[B, H, W, C]`` raw images (uint8, or float in [0, 1]).
      labels: ``[B]`` int32 labels.
      key: PRNG key of this step (augmentation, dropout, drop-path, noise).
      lr: learning rate of this step.
      drop_prob: drop-path probability of this step.
      setup: static settings.

    Returns:
      ``(state, metrics)`` with ``metrics`` = ``loss_sum`` (float32, the summed
      cross-entropy of the main head), ``correct`` and ``count`` (int32).
    """
    from jaxdarts.data import augment

    k_aug, k_drop, k_path, k_noise = jax.random.split(key, 4)
    x = augment(
        k_aug,
        images,
        crop_pad=setup.crop_pad,
        flip=setup.flip,
        cutout=setup.cutout,
        mean=setup.mean,
        std=setup.std,
    )
    model = setup.model
    rngs = {"dropout": k_drop, "drop_path": k_path, "noise": k_noise}

    def loss_fn(params):
        out, new_vars = model.apply(
            {"params": params, "batch_stats": state.batch_stats},
            x,
            train=True,
            drop_path_prob=drop_prob if setup.drop_path > 0 else None,
            mutable=["batch_stats"],
            rngs=rngs,
        )
        logits, aux = out if model.auxiliary else (out, None)
        ce = _cross_entropy(logits, labels)
        loss = ce.mean()
        if aux is not None:
            loss = loss + setup.auxiliary_weight * _cross_entropy(aux, labels).mean()
        return loss, (ce.sum(), logits, new_vars["batch_stats"])

    grads, (ce_sum, logits, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = make_optimizer(setup).update(
        grads, state.opt_state, state.params
    )
    params = jax.tree.map(lambda p, u: p - lr * u, state.params, updates)
    metrics = {
        "loss_sum": ce_sum.astype(jnp.float32),
        "correct": (logits.argmax(-1) == labels).sum().astype(jnp.int32),
        "count": jnp.asarray(labels.shape[0], jnp.int32),
    }
    return TrainState(params, batch_stats, opt_state), metrics


def eval_step(
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
    setup: Setup,
) -> dict[str, jax.Array]:
    """Test metrics of one batch (normalisation only, running BN statistics).

    Args:
      state: the training state.
      images: ``[B, H, W, C]`` raw images.
      labels: ``[B]`` int32 labels.
      mask: ``[B]`` bool, False for padding rows.
      setup: static settings.

    Returns:
      ``loss_sum`` (float32), ``correct`` and ``count`` (int32) over the valid rows.
    """
    from jaxdarts.data import normalize

    x = normalize(images, setup.mean, setup.std)
    logits = setup.model.apply(
        {"params": state.params, "batch_stats": state.batch_stats},
        x,
        train=False,
        rngs={"noise": jax.random.key(0)},
    )
    ce = _cross_entropy(logits, labels)
    return {
        "loss_sum": jnp.where(mask, ce, 0.0).sum(),
        "correct": ((logits.argmax(-1) == labels) & mask).sum().astype(jnp.int32),
        "count": mask.sum().astype(jnp.int32),
    }


def _zero_sums() -> dict[str, jax.Array]:
    return {
        "loss_sum": jnp.zeros((), jnp.float32),
        "correct": jnp.zeros((), jnp.int32),
        "count": jnp.zeros((), jnp.int32),
    }


def epoch_keys(key: jax.Array, epoch: int | jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(shuffle key, step key root)`` of an epoch, from the run key and the epoch."""
    k = jax.random.fold_in(key, epoch)
    return jax.random.split(k)


@functools.partial(
    jax.jit, static_argnames=("setup",), donate_argnames=("state", "sums")
)
def train_chunk(
    state: TrainState,
    sums: dict[str, jax.Array],
    images: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    epoch: jax.Array,
    start: jax.Array,
    lr: jax.Array,
    drop_prob: jax.Array,
    setup: Setup,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """Steps ``start .. start + steps_per_call - 1`` of an epoch as one ``lax.scan``.

    Steps past the end of the epoch are skipped (``lax.cond``), so every call has
    the same shape and compiles once. Batch ``j`` of epoch ``e`` and its step key
    depend only on ``(key, e, j)``.

    Args:
      state: the training state (donated).
      sums: running metric sums of the epoch (donated).
      images: ``[N, H, W, C]`` all training images (on device).
      labels: ``[N]`` int32.
      key: the run's PRNG key (from the seed).
      epoch: int32 scalar, 0-based epoch.
      start: int32 scalar, first step of this call.
      lr: float32 scalar, learning rate of the epoch.
      drop_prob: float32 scalar, drop-path probability of the epoch.
      setup: static settings.

    Returns:
      ``(state, sums)`` after the chunk.
    """
    from jaxdarts.data import batch_indices

    shuffle_key, step_root = epoch_keys(key, epoch)
    idx = batch_indices(shuffle_key, setup.num_train, setup.batch_size)

    def do_step(carry, j):
        st, sm = carry
        b = idx[j]
        st, m = train_step(
            st,
            # split over the devices under --devices N (else a no-op)
            sharding.constrain_batch(jnp.take(images, b, axis=0)),
            sharding.constrain_batch(jnp.take(labels, b, axis=0)),
            jax.random.fold_in(step_root, j),
            lr,
            drop_prob,
            setup,
        )
        return st, jax.tree.map(jnp.add, sm, m)

    def body(carry, j):
        carry = jax.lax.cond(
            j < setup.steps_per_epoch,
            lambda c: do_step(c, j),
            lambda c: c,
            carry,
        )
        return carry, None

    steps = start + jnp.arange(setup.steps_per_call, dtype=jnp.int32)
    (state, sums), _ = jax.lax.scan(body, (state, sums), steps)
    return state, sums


def train_epoch(
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    key: jax.Array,
    epoch: int,
    setup: Setup,
    *,
    lr: float,
    drop_prob: float = 0.0,
    start_step: int = 0,
    sums: dict[str, jax.Array] | None = None,
    on_chunk: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[TrainState, dict[str, jax.Array], int]:
    """Runs (the rest of) one epoch as a short host loop over jitted chunks.

    Args:
      state: the training state (its buffers are donated).
      images: ``[N, H, W, C]`` training images, on device.
      labels: ``[N]`` int32 labels, on device.
      key: the run's PRNG key.
      epoch: 0-based epoch.
      setup: static settings.
      lr: learning rate of the epoch (:func:`learning_rate`).
      drop_prob: drop-path probability of the epoch (:func:`drop_path_prob`).
      start_step: first step (a resumed epoch).
      sums: metric sums so far in this epoch (a resumed epoch).
      on_chunk: called with the number of steps done after each chunk.
      should_stop: polled after each chunk; True stops the epoch early.

    Returns:
      ``(state, sums, step)``: ``step == setup.steps_per_epoch`` when the epoch
      is complete, else the first step not yet done.
    """
    sums = _zero_sums() if sums is None else sums
    # Commit every input to the data's device(s): jit caches committed and
    # uncommitted arguments separately, and a restored checkpoint is committed.
    # (--devices N: the data is replicated over a mesh, and so is everything else.)
    dev = images.sharding if isinstance(images, jax.Array) else jax.devices()[0]
    images, labels, key, state, sums = jax.device_put(
        (images, labels, key, state, sums), dev
    )
    step = start_step
    lr_, prob_ = jnp.float32(lr), jnp.float32(drop_prob)
    while step < setup.steps_per_epoch:
        state, sums = train_chunk(
            state,
            sums,
            images,
            labels,
            key,
            jnp.int32(epoch),
            jnp.int32(step),
            lr_,
            prob_,
            setup,
        )
        done = min(setup.steps_per_call, setup.steps_per_epoch - step)
        step += done
        if on_chunk is not None:
            on_chunk(done)
        if should_stop is not None and step < setup.steps_per_epoch and should_stop():
            break
    return state, sums, step


@functools.partial(jax.jit, static_argnames=("setup",))
def _evaluate(state, images, labels, mask, setup):
    b = setup.eval_batch_size
    shaped = [a.reshape(-1, b, *a.shape[1:]) for a in (images, labels, mask)]

    def body(sums, batch):
        batch = sharding.constrain_batch(batch)  # --devices N
        m = eval_step(state, *batch, setup)
        return jax.tree.map(jnp.add, sums, m), None

    sums, _ = jax.lax.scan(body, _zero_sums(), tuple(shaped))
    return sums


def pad_eval_set(
    images: np.ndarray, labels: np.ndarray, batch_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pads a test set to a multiple of ``batch_size``; returns images, labels, mask."""
    n = len(labels)
    pad = -n % batch_size
    mask = np.concatenate([np.ones(n, bool), np.zeros(pad, bool)])
    images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
    labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
    return images, labels, mask


def evaluate(
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
    setup: Setup,
) -> dict[str, float]:
    """Loss and accuracy over a (padded) test set in one jitted scan.

    Args:
      state: the training state.
      images: ``[M, H, W, C]`` with ``M`` a multiple of ``setup.eval_batch_size``
        (see :func:`pad_eval_set`).
      labels: ``[M]`` int32.
      mask: ``[M]`` bool, False on padding.
      setup: static settings.

    Returns:
      ``{"loss": mean cross-entropy, "accuracy": fraction correct}``.
    """
    s = jax.device_get(_evaluate(state, images, labels, mask, setup))
    n = max(int(s["count"]), 1)
    return {"loss": float(s["loss_sum"]) / n, "accuracy": int(s["correct"]) / n}


# ------------------------------------------------------------------------- run


def _count(tree: Any) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def plot_curves(metrics: list[dict[str, Any]], path: str | os.PathLike) -> None:
    """Writes loss and accuracy against epoch (train and test) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from jaxdarts.io import atomic_write_bytes

    ep = [m["epoch"] for m in metrics]
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for split in ("train", "test"):
        ax_loss.plot(ep, [m[f"{split}_loss"] for m in metrics], label=split)
        ax_acc.plot(ep, [100 * m[f"{split}_acc"] for m in metrics], label=split)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())


def _default_out(config: dict[str, Any]) -> str:
    src = str(config.get("genotype_source") or "genotype")
    name = Path(src).stem if src.endswith(".json") else src
    if name.startswith("Genotype("):
        name = "custom"
    if name == "genotype" and src.endswith(".json"):
        name = Path(src).parent.name or "genotype"
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", "train", f"{name}-{stamp}")


def _is_nonempty_dir(path: Path) -> bool:
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def run(
    config: dict[str, Any],
    out: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    *,
    stop_after: int | None = None,
    interrupt: Any = None,
    devices: int | None = None,
) -> dict[str, Any]:
    """Trains a genotype's evaluation network; writes the run folder.

    Args:
      config: resolved config (:func:`make_config`).
      out: run folder (default ``runs/train/<genotype>-<time>``).
      resume: continue the run in ``out`` from its latest checkpoint; the config
        must equal the saved one (``data_dir`` excepted).
      overwrite: replace an existing run folder ``out``.
      stop_after: stop (with a checkpoint) after this many epochs in total, as if
        interrupted; a later ``resume`` continues bit-exactly.
      interrupt: an object with a ``requested`` attribute polled after every chunk
        of steps (default: a :class:`~jaxdarts.runs.GracefulInterrupt` on Ctrl-C).
      devices: data parallelism over the first ``devices`` devices (each batch
        split, weights replicated; :mod:`jaxdarts.sharding`); not part of the
        config: the results agree with one device to float rounding.

    Returns:
      ``result.json``'s contents when the run finished; when it stopped early, a
      dict with ``interrupted: True``, ``epoch``, ``step`` and ``run_dir``.

    Raises:
      RunExistsError: ``out`` exists and neither ``resume`` nor ``overwrite``.
      ConfigMismatchError: ``resume`` with a config that differs from the saved one.
      DataNotFoundError: the dataset is not prepared.
    """
    from jaxdarts.data import load_dataset
    from jaxdarts.runs import (
        DEFAULT_RESUME_IGNORE,
        GracefulInterrupt,
        RunDir,
        RunExistsError,
        progress,
        setup_logging,
    )

    _check_config(config)
    if resume:
        if out is None:
            raise ValueError("resume needs the run folder")
        rundir = RunDir.resume(
            out, config, ignore=DEFAULT_RESUME_IGNORE + _RESUME_IGNORE
        )
        config = dict(rundir.config, data_dir=config["data_dir"])
    else:
        out = Path(out if out is not None else _default_out(config))
        if _is_nonempty_dir(out) and not overwrite:
            raise RunExistsError(out)
    mesh = None
    if devices is not None:  # --devices N
        if devices < 1 or config["batch_size"] % devices:
            raise ValueError(
                f"--devices {devices} must be >= 1 and divide the batch size "
                f"{config['batch_size']}"
            )
        mesh = sharding.make_mesh(devices)
    genotype = config_genotype(config)

    t_load = time.perf_counter()
    ds = load_dataset(config["dataset"], config["data_dir"])
    setup = make_setup(
        config,
        ds.image_shape,
        ds.num_classes,
        len(ds.train_labels),
        ds.mean,
        ds.std,
    )
    if not resume:
        rundir = RunDir.create(out, config, overwrite=overwrite)
        if rundir.writer:  # multi-host: process 0 writes the run folder
            save_genotype_json(rundir.path / "genotype.json", genotype)
    setup_logging(rundir.path)
    log.info(
        "dataset %s: %d train / %d test images of %s, %d classes (loaded in %.1fs)",
        ds.name,
        len(ds.train_labels),
        len(ds.test_labels),
        "x".join(map(str, ds.image_shape)),
        ds.num_classes,
        time.perf_counter() - t_load,
    )

    key = jax.random.key(config["seed"])
    init_key, run_key = jax.random.split(key)
    state = create_train_state(
        init_key, config, genotype, ds.image_shape, ds.num_classes
    )
    n_params = _count({k: v for k, v in state.params.items() if k != "aux_head"})
    n_aux = _count(state.params.get("aux_head", {}))
    log.info(
        "network: %d cells, C=%d, %.3fM parameters%s; %s",
        config["layers"],
        config["channels"],
        n_params / 1e6,
        f" (+{n_aux / 1e6:.3f}M auxiliary head)" if n_aux else "",
        to_darts_string(genotype),
    )

    ckpt_tree = {
        "state": state,
        "epoch": np.int32(0),
        "step": np.int32(0),
        "sums": _zero_sums(),
        "key": run_key,
    }
    ckpt = rundir.checkpointer(max_to_keep=config["max_to_keep"])
    spe = setup.steps_per_epoch
    epoch, step, sums = 0, 0, None
    if resume and ckpt.latest_step() is not None:
        restored = ckpt.restore(None, ckpt_tree)
        state = restored["state"]
        epoch, step = int(restored["epoch"]), int(restored["step"])
        sums = restored["sums"]
        rundir.truncate_metrics(epoch * spe + step)
        log.info("resumed from epoch %d, step %d of %d", epoch, step, spe)
    elif resume:
        rundir.truncate_metrics(0)
        log.info("no checkpoint in %s yet: starting from the beginning", rundir.path)

    dev = jax.devices()[0]
    if mesh is not None:  # --devices N: data replicated, each batch split
        dev = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        # multi-host: every jax.Array of the step global (sharding.put)
        state, run_key, sums = sharding.put((state, run_key, sums), dev)
    train_x = sharding.put(ds.train_images, dev)
    train_y = sharding.put(ds.train_labels.astype(np.int32), dev)
    test = pad_eval_set(ds.test_images, ds.test_labels, setup.eval_batch_size)
    test_x, test_y, test_mask = (sharding.put(a, dev) for a in test)

    def save(epoch_: int, step_: int, sums_) -> None:
        tree = {
            "state": state,
            "epoch": np.int32(epoch_),
            "step": np.int32(step_),
            "sums": _zero_sums() if sums_ is None else sums_,
            "key": run_key,
        }
        ckpt.save(epoch_ * spe + step_, tree)

    stop_at = (
        config["epochs"] if stop_after is None else min(stop_after, config["epochs"])
    )
    interrupted = False
    bar = progress(
        config["epochs"] * spe, "train", initial=epoch * spe + step, unit="step"
    )
    guard = GracefulInterrupt() if interrupt is None else None
    flag = interrupt if interrupt is not None else guard
    try:
        if guard is not None:
            guard.__enter__()
        while epoch < stop_at:
            t0 = time.perf_counter()
            first = step
            with sharding.use_mesh(mesh):  # --devices N
                state, sums, step = train_epoch(
                    state,
                    train_x,
                    train_y,
                    run_key,
                    epoch,
                    setup,
                    lr=learning_rate(config, epoch),
                    drop_prob=drop_path_prob(config, epoch),
                    start_step=step,
                    sums=sums,
                    on_chunk=bar.update,
                    should_stop=lambda: bool(flag.requested),
                )
            if step < spe:  # interrupted inside the epoch
                jax.block_until_ready(state)
                save(epoch, step, sums)
                interrupted = True
                break
            s = sharding.fetch(sums)  # multi-host: gathered
            jax.block_until_ready(state)
            t_train = time.perf_counter() - t0
            with sharding.use_mesh(mesh):
                test_m = evaluate(state, test_x, test_y, test_mask, setup)
            n = max(int(s["count"]), 1)
            record = {
                "epoch": epoch + 1,
                "step": (epoch + 1) * spe,
                "lr": learning_rate(config, epoch),
                "drop_path": drop_path_prob(config, epoch),
                "train_loss": float(s["loss_sum"]) / n,
                "train_acc": int(s["correct"]) / n,
                "test_loss": test_m["loss"],
                "test_acc": test_m["accuracy"],
                "images_per_s": (spe - first) * setup.batch_size / t_train,
                "time": time.perf_counter() - t0,
            }
            rundir.append_metrics(record)
            bar.set_postfix(
                epoch=epoch + 1,
                loss=f"{record['train_loss']:.3f}",
                test_acc=f"{record['test_acc']:.3f}",
            )
            log.debug("epoch %d: %s", epoch + 1, record)
            epoch, step, sums = epoch + 1, 0, None
            stop = bool(flag.requested)
            if epoch % config["checkpoint_every"] == 0 or epoch == stop_at or stop:
                save(epoch, 0, None)
            if stop:
                interrupted = epoch < config["epochs"]
                break
    finally:
        bar.close()
        if guard is not None:
            guard.__exit__(None, None, None)
        ckpt.close()

    if epoch < config["epochs"]:
        if interrupted:
            where = f"interrupted at epoch {epoch}, step {step} of {spe}"
        else:
            where = f"stopped after epoch {epoch} of {config['epochs']}"
        log.info(
            "%s; checkpoint saved. Continue with: python -m jaxdarts.train --resume %s",
            where,
            rundir.path,
        )
        return {
            "interrupted": True,
            "epoch": epoch,
            "step": step,
            "run_dir": str(rundir.path),
        }

    if not rundir.writer:  # multi-host: process 0 reads and writes the results
        return {"epochs": epoch, "run_dir": str(rundir.path)}
    metrics = rundir.read_metrics()
    final = metrics[-1]
    best = max(metrics, key=lambda m: m["test_acc"])
    result = {
        "test_accuracy": final["test_acc"],
        "test_loss": final["test_loss"],
        "train_accuracy": final["train_acc"],
        "best_test_accuracy": best["test_acc"],
        "best_test_accuracy_epoch": best["epoch"],
        "best_test_accuracy_note": (
            "the reference's figure: the best epoch chosen on the test set itself "
            "(test-set selection); test_accuracy is the final epoch's"
        ),
        "params": n_params,
        "params_millions": round(n_params / 1e6, 3),
        "params_auxiliary_head": n_aux,
        "epochs": config["epochs"],
        "dataset": config["dataset"],
        "genotype": to_darts_string(genotype),
        "train_time_s": float(sum(m["time"] for m in metrics)),
        "images_per_s": float(np.median([m["images_per_s"] for m in metrics])),
        "run_dir": str(rundir.path),
    }
    rundir.write_json("result.json", result)
    plot_curves(metrics, rundir.path / "curves.png")
    log.info(
        "done: test accuracy %.2f%% at the final epoch %d (best epoch %d: %.2f%%, "
        "test-set selection); %.3fM parameters. Outputs in %s (result.json, "
        "metrics.jsonl, curves.png, checkpoints/, log.txt)",
        100 * result["test_accuracy"],
        config["epochs"],
        best["epoch"],
        100 * best["test_acc"],
        n_params / 1e6,
        rundir.path,
    )
    return result


# ------------------------------------------------------------------------- CLI


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set needs key=value, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jaxdarts.train",
        description="Train the evaluation network of a genotype from scratch and "
        "report its test accuracy (final epoch).",
    )
    p.add_argument(
        "--genotype",
        help="published name (e.g. disc-nwot), a genotype JSON file (e.g. a search "
        "run's genotype.json) or a DARTS 'Genotype(...)' string",
    )
    p.add_argument("--preset", choices=sorted(PRESETS), help="default: paper")
    p.add_argument("--dataset", help="digits, cifar10, a TFDS name or npz:PATH")
    p.add_argument("--data-dir", help="TFDS data directory")
    p.add_argument("--out", help="run folder (default runs/train/<genotype>-<time>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR")
    p.add_argument(
        "--overwrite", action="store_true", help="replace --out if it exists"
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--channels", type=int, help="initial channels C")
    p.add_argument("--layers", type=int, help="number of cells L")
    p.add_argument(
        "--auxiliary",
        action="store_true",
        default=None,
        help="DARTS auxiliary head (weight 0.4)",
    )
    p.add_argument(
        "--drop-path",
        type=float,
        help="DARTS drop-path probability, ramped from 0 (DARTS: 0.2)",
    )
    p.add_argument("--cutout", type=int, help="cutout side (0 = off)")
    p.add_argument(
        "--bf16", action="store_true", default=None, help="compute in bfloat16"
    )
    p.add_argument(
        "--stop-after",
        type=int,
        metavar="N",
        help="stop with a checkpoint after epoch N (continue later with --resume)",
    )
    p.add_argument(
        "--devices",
        type=int,
        metavar="N",
        help="data parallel over the first N devices (jax.sharding): each batch "
        "split N ways, weights replicated; N must divide the batch size",
    )
    p.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not use JAX's persistent compilation cache",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any config key (JSON value), e.g. --set lr=0.05 --set impl=xla",
    )
    return p


def _config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Builds (or, on --resume, re-reads and overlays) the config; ValueError if bad."""
    flags = {
        "genotype": args.genotype,
        "dataset": args.dataset,
        "data_dir": args.data_dir,
        "seed": args.seed,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "channels": args.channels,
        "layers": args.layers,
        "auxiliary": args.auxiliary,
        "drop_path": args.drop_path,
        "cutout": args.cutout,
        "bf16": args.bf16,
    }
    given = {k: v for k, v in flags.items() if v is not None}
    given.update(_parse_set(args.set))
    if args.resume:
        path = Path(args.resume) / "config.json"
        if not path.is_file():
            raise ValueError(f"cannot resume {args.resume}: no config.json there")
        saved = json.loads(path.read_text())
        preset = args.preset or saved.get("preset", "paper")
        if preset != saved.get("preset"):
            raise ValueError(
                f"cannot resume {args.resume} with preset {preset!r}: it was started "
                f"with {saved.get('preset')!r}"
            )
        base = {k: v for k, v in saved.items() if k != "preset"}
        if "genotype" in given:
            base.pop("genotype_source", None)
        base.update(given)
        return make_config(preset, **base)
    if args.genotype is None and "genotype" not in given:
        raise ValueError(
            "--genotype is required (a published name such as disc-nwot, a "
            "genotype.json file or a 'Genotype(...)' string), unless --resume"
        )
    return make_config(args.preset or "paper", **given)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status.

    Exit status: 0 done (or stopped by ``--stop-after``), 1 run error (existing
    folder, changed config, missing data), 2 bad arguments, 130 interrupted by
    Ctrl-C (a checkpoint was saved).
    """
    from jaxdarts.sharding import maybe_initialize_distributed

    maybe_initialize_distributed()  # multi-host runs: see README "Scaling out"
    from jaxdarts.data import DataNotFoundError
    from jaxdarts.runs import (
        ConfigMismatchError,
        RunExistsError,
        enable_compilation_cache,
        setup_logging,
    )

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.stop_after is not None and args.stop_after < 1:
        parser.error(f"--stop-after must be >= 1, got {args.stop_after}")
    if args.resume and args.out and Path(args.out) != Path(args.resume):
        parser.error("give either --out (new run) or --resume DIR, not both")
    if args.resume and args.overwrite:
        parser.error("--overwrite cannot be combined with --resume")
    try:
        config = _config_from_args(args)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    setup_logging(None)
    if not args.no_compile_cache:
        enable_compilation_cache()
    try:
        result = run(
            config,
            args.resume or args.out,
            resume=bool(args.resume),
            overwrite=args.overwrite,
            stop_after=args.stop_after,
            devices=args.devices,
        )
    except (RunExistsError, ConfigMismatchError, DataNotFoundError) as e:
        msg = str(e)
        if isinstance(e, RunExistsError):
            msg += " (use --overwrite to replace it or --resume to continue it)"
        print(f"error: {msg}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as e:  # e.g. an unknown dataset name
        print(f"error: {e}", file=sys.stderr)
        return 1
    if result.get("interrupted"):
        return (
            0
            if args.stop_after is not None and result["epoch"] >= args.stop_after
            else 130
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
