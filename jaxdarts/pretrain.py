"""Pre-trains the supernet's weights (the ckpt and cont variants' starting point).

Command line::

    python -m jaxdarts.pretrain                          # paper: CIFAR-10, DARTS space
    python -m jaxdarts.pretrain --preset quick           # digits, tiny supernet, ~1.5 min
    python -m jaxdarts.pretrain --space s2 --compat dartsrl --out runs/pre-s2
    python -m jaxdarts.pretrain --resume runs/pre-s2

What it does (reference.md section 5, ``train_weights.py``): the supernet's
*weights* are trained with SGD while the architecture parameters stay at their
near-uniform initial draw ``alpha_std * N(0, 1)`` (1e-3, drawn once from the seed and
never optimised), so every edge is a near-uniform mixture of all its ops. Preset
``paper``: CIFAR-10, C=16, 8 cells, 50 epochs, batch 64, SGD momentum 0.9, weight
decay 3e-4, gradient norm clipped to 5, learning rate 0.025 cosine-annealed to 0.001
and stepped per epoch. Training uses the first half of the seeded 50/50 split of the
train set (:func:`jaxdarts.data.split_indices`), with train-mode BatchNorm (running
statistics updated) and random crop + flip (cutout off unless ``--cutout N``) on the
device; after every epoch the second half is evaluated in eval mode (running
statistics). Preset ``quick``: scikit-learn digits, C=4, 3 cells, 5 epochs (95 s
on a busy 2-core CPU with a cold compilation cache, validation loss 2.30 -> 0.35,
accuracy 89%).

The optimiser follows ``clip_grad_norm_`` then ``torch.optim.SGD``: the raw
gradient is clipped to global norm ``grad_clip`` first, then ``weight_decay * w`` is
added, then the momentum buffer ``b = momentum * b + g`` (``b = g`` at the first step)
and ``w -= lr * b``.

``--mode darts1`` (beyond the reference) is first-order DARTS: every step first
takes an Adam step on the alphas (lr 3e-4, betas (0.5, 0.999), L2 weight decay 1e-3,
as in DARTS) on a batch of the validation half, then the SGD weight step on a batch of
the training half with the updated alphas. Its "validation" metrics are then not
held out (the alphas are fitted on that half, as in DARTS), and it also writes
``genotype.json`` (the discretised alphas of the last epoch).

Outputs in the run folder (``--out``, default ``runs/pretrain-<space>-<time>``):
``config.json``, ``env.json``, ``log.txt``, ``metrics.jsonl`` (one line per epoch; a
first line ``epoch 0`` holds the validation metrics before training),
``checkpoints/`` (Orbax; every ``checkpoint_every`` epochs and on Ctrl-C; ``--resume``
continues bitwise exactly), ``result.json``, and the deliverable ``supernet/``: the
weights (``params`` and ``batch_stats``) of the epoch with the best validation top-1
accuracy so far (the reference saves whenever it improves), an Orbax pytree with
``supernet.json`` inside describing it. Load it with :func:`load_supernet`.

Differences from the reference: the last partial training batch of an epoch is
dropped (the reference trains on it); the validation half is not augmented unless
``augment_valid`` (the reference augments it, reference.md section 12 item 17);
gradient clipping scales by ``max_norm / norm`` (torch: ``max_norm / (norm +
1e-6)``); the split comes from NumPy, not torch's RNG; the default seed is 0
(the reference's is 42).
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
import shutil
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
from jaxdarts.spaces import NUM_EDGES, get_space
from jaxdarts.supernet import SupernetConfig, get_supernet

__all__ = [
    "PRESETS",
    "MODES",
    "SUPERNET_DIR",
    "SUPERNET_META",
    "TrainState",
    "Setup",
    "make_config",
    "supernet_config",
    "train_impl",
    "make_setup",
    "initial_alphas",
    "create_train_state",
    "learning_rate",
    "train_step",
    "eval_step",
    "train_epoch",
    "evaluate",
    "save_supernet",
    "load_supernet",
    "supernet_config_from_meta",
    "run",
    "main",
]

log = logging.getLogger("jaxdarts.pretrain")

#: Sub-folder of a pre-training run that holds the best weights.
SUPERNET_DIR = "supernet"
#: JSON file inside :data:`SUPERNET_DIR` describing the weights.
SUPERNET_META = "supernet.json"
_META_FORMAT = "jaxdarts.supernet/1"

#: ``weights``: the reference (weights only, alphas frozen); ``darts1``: first-order
#: DARTS (alternating alpha and weight steps).
MODES = ("weights", "darts1")

_BASE: dict[str, Any] = {
    "preset": "paper",
    "mode": "weights",
    "space": "darts",
    "dataset": "cifar10",
    "data_dir": None,
    "seed": 0,
    "epochs": 50,
    "batch_size": 64,
    "eval_batch_size": 250,
    "channels": 16,
    "layers": 8,
    "stem_multiplier": 3,
    "compat": None,  # "dartsrl": the reference's normal/reduce alpha swap
    "alpha_std": 1e-3,  # alphas = alpha_std * N(0, 1), drawn once from the seed
    "lr": 0.025,
    "lr_min": 0.001,
    "momentum": 0.9,
    "weight_decay": 3e-4,
    "grad_clip": 5.0,  # 0 disables
    "arch_lr": 3e-4,  # darts1 mode only (DARTS' Adam on the alphas)
    "arch_beta1": 0.5,
    "arch_beta2": 0.999,
    "arch_weight_decay": 1e-3,
    "cutout": 0,  # the reference's --cutout uses 16
    "crop_pad": None,  # None: data.default_crop_pad(image size), 4 for 32x32
    "flip": True,
    "augment_valid": False,  # the reference augments the validation half
    # Depthwise conv / pool form (jaxdarts.ops). "auto" here means "loop" on CPU and
    # "xla" elsewhere (see train_impl).
    "impl": "auto",
    "steps_per_call": 64,  # train steps per jitted call (one lax.scan)
    "checkpoint_every": 1,  # epochs
    "max_to_keep": 2,  # null keeps every checkpoint
}

#: Preset name -> overrides of the base config.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "quick": {
        "preset": "quick",
        "dataset": "digits",
        "epochs": 5,
        "batch_size": 32,
        "eval_batch_size": 240,
        "channels": 4,
        "layers": 3,
        "lr": 0.05,
        "steps_per_call": 22,
    },
}

# Keys where None is a value (not "keep the default").
_NULLABLE = ("crop_pad", "data_dir", "compat", "max_to_keep")

# Keys that may differ between a run and its --resume.
_RESUME_IGNORE = ("data_dir",)

_POSITIVE_INTS = (
    "epochs",
    "batch_size",
    "eval_batch_size",
    "channels",
    "layers",
    "stem_multiplier",
    "steps_per_call",
    "checkpoint_every",
)
_FLOATS = (
    "alpha_std",
    "lr",
    "lr_min",
    "momentum",
    "weight_decay",
    "grad_clip",
    "arch_lr",
    "arch_beta1",
    "arch_beta2",
    "arch_weight_decay",
)


# ----------------------------------------------------------------------- config


def _is_real(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_config(config: dict[str, Any]) -> None:
    """Raises ValueError naming the first bad value (no data, no compile)."""
    if config["mode"] not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {config['mode']!r}")
    get_space(config["space"])  # ValueError listing the spaces
    for key in _POSITIVE_INTS:
        if not _is_int(config[key]) or config[key] < 1:
            raise ValueError(f"{key} must be a positive integer, got {config[key]!r}")
    mk = config["max_to_keep"]
    if mk is not None and (not _is_int(mk) or mk < 1):
        raise ValueError(f"max_to_keep must be null (keep all) or >= 1, got {mk!r}")
    if not _is_int(config["seed"]):
        raise ValueError(f"seed must be an integer, got {config['seed']!r}")
    for key in ("flip", "augment_valid"):
        if not isinstance(config[key], bool):
            raise ValueError(f"{key} must be true or false, got {config[key]!r}")
    for key in ("lr", "alpha_std", "arch_lr"):
        if not _is_real(config[key]) or config[key] <= 0:
            raise ValueError(f"{key} must be a positive number, got {config[key]!r}")
    for key in ("lr_min", "weight_decay", "grad_clip", "arch_weight_decay"):
        if not _is_real(config[key]) or config[key] < 0:
            raise ValueError(f"{key} must be a number >= 0, got {config[key]!r}")
    for key in ("momentum", "arch_beta1", "arch_beta2"):
        if not _is_real(config[key]) or not 0 <= config[key] < 1:
            raise ValueError(f"{key} must be in [0, 1), got {config[key]!r}")
    if not _is_int(config["cutout"]) or config["cutout"] < 0:
        raise ValueError(
            f"cutout must be an integer >= 0 (0 = off), got {config['cutout']!r}"
        )
    cp = config["crop_pad"]
    if cp is not None and (not _is_int(cp) or cp < 0):
        raise ValueError(f"crop_pad must be null (auto) or an integer >= 0, got {cp!r}")
    if config["compat"] not in (None, "dartsrl"):
        raise ValueError(
            f"compat must be null (the paper's semantics) or 'dartsrl', got "
            f"{config['compat']!r}"
        )
    if not isinstance(config["impl"], str):
        raise ValueError(f"impl must be a string, got {config['impl']!r}")
    if not isinstance(config["dataset"], str) or not config["dataset"].strip():
        raise ValueError(f"dataset must be a non-empty name, got {config['dataset']!r}")
    dd = config["data_dir"]
    if dd is not None and not isinstance(dd, str):
        raise ValueError(f"data_dir must be a path or null, got {dd!r}")
    # channels even, layers >= 1, a known impl, ... (without starting a backend)
    supernet_config(config, num_classes=10, resolve_impl=False)


def make_config(preset: str = "paper", **overrides: Any) -> dict[str, Any]:
    """The resolved, validated config of a pre-training run.

    Args:
      preset: ``"paper"`` or ``"quick"`` (see :data:`PRESETS`).
      **overrides: config values (``None`` values are ignored, except for
        ``crop_pad``, ``data_dir``, ``compat`` and ``max_to_keep`` where None is
        meaningful).

    Returns:
      A JSON-able dict.

    Raises:
      ValueError: unknown preset or key (the message lists the valid ones), or a
        bad value.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; presets are {sorted(PRESETS)}")
    config = dict(_BASE)
    config.update(PRESETS[preset])
    config["preset"] = preset
    for key, value in overrides.items():
        if key not in config:
            raise ValueError(
                f"unknown config key {key!r}; valid keys: {', '.join(sorted(config))}"
            )
        if key == "preset":
            if value is not None and value != preset:
                raise ValueError(
                    f"preset {value!r} given as an override of preset {preset!r}"
                )
            continue
        if value is None and key not in _NULLABLE:
            continue
        config[key] = value
    for key in _FLOATS:
        if _is_int(config[key]):
            config[key] = float(config[key])
    if isinstance(config["space"], str):
        config["space"] = config["space"].strip().lower()
    if config["compat"] in ("", "none", "null"):
        config["compat"] = None
    _check_config(config)
    config["space"] = get_space(config["space"]).name
    return config


def train_impl(impl: str) -> str:
    """The op implementation used for training; ``"auto"``: ``loop`` on CPU, else
    ``xla``.

    Measured on XLA:CPU (2 cores, C=4, 3 cells, batch 32, value and gradient): the
    unrolled ``shift`` form's backward pass took 188 s to compile (2 cells); ``xla``
    compiled in 27 s and ran a step in 0.35 s; ``loop`` compiled in 31 s and ran a
    step in 0.21 s (the quick preset: 95 s against 145 s end to end).
    """
    if impl != "auto":
        return impl
    return "loop" if jax.default_backend() == "cpu" else "xla"


def supernet_config(
    config: dict[str, Any], num_classes: int, resolve_impl: bool = True
) -> SupernetConfig:
    """The :class:`SupernetConfig` of a run config.

    Args:
      config: resolved config; ``compat="dartsrl"`` sets ``swap_cells``.
      num_classes: classifier outputs.
      resolve_impl: resolve ``impl="auto"`` with :func:`train_impl` (which asks
        for the default backend); False keeps ``"auto"``.
    """
    impl = config["impl"]
    return SupernetConfig(
        space=config["space"],
        channels=config["channels"],
        layers=config["layers"],
        num_classes=num_classes,
        stem_multiplier=config["stem_multiplier"],
        impl=train_impl(impl) if resolve_impl else impl,
        swap_cells=config["compat"] == "dartsrl",
    )


# ------------------------------------------------------------------ train state


@flax.struct.dataclass
class TrainState:
    """Everything that changes during pre-training.

    Attributes:
      params: supernet parameters.
      batch_stats: BatchNorm running statistics.
      opt_state: SGD state (momentum buffers).
      alphas: ``{"normal": [14, K], "reduce": [14, K]}`` architecture parameters
        (constant in ``weights`` mode).
      arch_opt_state: Adam state of the alphas (``darts1`` mode; empty otherwise).
    """

    params: Any
    batch_stats: Any
    opt_state: Any
    alphas: Any
    arch_opt_state: Any


@dataclasses.dataclass(frozen=True)
class Setup:
    """Static (hashable) settings of the jitted functions; see :func:`make_setup`."""

    net: SupernetConfig
    mode: str
    num_train: int
    num_valid: int
    batch_size: int
    steps_per_epoch: int
    steps_per_call: int
    epochs: int
    lr: float
    lr_min: float
    momentum: float
    weight_decay: float
    grad_clip: float
    arch_lr: float
    arch_beta1: float
    arch_beta2: float
    arch_weight_decay: float
    alpha_std: float
    crop_pad: int
    flip: bool
    cutout: int
    augment_valid: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    eval_batch_size: int


def make_setup(
    config: dict[str, Any],
    image_shape: Sequence[int],
    num_classes: int,
    num_train: int,
    num_valid: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> Setup:
    """Static settings for the jitted functions of a run.

    Args:
      config: resolved config (:func:`make_config`).
      image_shape: ``(H, W, C)`` of the images.
      num_classes: classifier outputs.
      num_train: images in the training half.
      num_valid: images in the validation half.
      mean: per-channel mean (``[0, 1]`` pixel units).
      std: per-channel standard deviation.

    Raises:
      ValueError: fewer training (or, in ``darts1`` mode, validation) images than
        one batch.
    """
    from jaxdarts.data import default_crop_pad

    n = num_train if config["mode"] == "weights" else min(num_train, num_valid)
    steps = n // config["batch_size"]
    if steps < 1:
        raise ValueError(
            f"batch_size {config['batch_size']} is larger than the {n} images of the "
            "training half"
        )
    crop_pad = config["crop_pad"]
    if crop_pad is None:
        crop_pad = default_crop_pad(min(image_shape[0], image_shape[1]))
    return Setup(
        net=supernet_config(config, num_classes),
        mode=config["mode"],
        num_train=int(num_train),
        num_valid=int(num_valid),
        batch_size=config["batch_size"],
        steps_per_epoch=steps,
        steps_per_call=min(config["steps_per_call"], steps),
        epochs=config["epochs"],
        lr=float(config["lr"]),
        lr_min=float(config["lr_min"]),
        momentum=float(config["momentum"]),
        weight_decay=float(config["weight_decay"]),
        grad_clip=float(config["grad_clip"]),
        arch_lr=float(config["arch_lr"]),
        arch_beta1=float(config["arch_beta1"]),
        arch_beta2=float(config["arch_beta2"]),
        arch_weight_decay=float(config["arch_weight_decay"]),
        alpha_std=float(config["alpha_std"]),
        crop_pad=int(crop_pad),
        flip=bool(config["flip"]),
        cutout=int(config["cutout"]),
        augment_valid=bool(config["augment_valid"]),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        eval_batch_size=config["eval_batch_size"],
    )


def weight_optimizer(setup: Setup) -> optax.GradientTransformation:
    """``clip_grad_norm_`` + ``torch.optim.SGD`` without the learning rate.

    The chain clip -> add ``weight_decay * w`` (every parameter) -> momentum trace;
    the caller scales by ``-lr``.
    """
    parts = []
    if setup.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(setup.grad_clip))
    if setup.weight_decay > 0:
        parts.append(optax.add_decayed_weights(setup.weight_decay))
    if setup.momentum > 0:
        parts.append(optax.trace(decay=setup.momentum, nesterov=False))
    return optax.chain(*parts)


def arch_optimizer(setup: Setup) -> optax.GradientTransformation:
    """DARTS' alpha optimiser: ``torch.optim.Adam`` with L2 weight decay."""
    return optax.chain(
        optax.add_decayed_weights(setup.arch_weight_decay),
        optax.scale_by_adam(b1=setup.arch_beta1, b2=setup.arch_beta2, eps=1e-8),
        optax.scale(-setup.arch_lr),
    )


def learning_rate(setup: Setup | dict[str, Any], epoch: int | jax.Array) -> jax.Array:
    """Cosine annealing stepped per epoch (``CosineAnnealingLR(T_max=epochs)``).

    Args:
      setup: run settings (or a config dict with ``lr``, ``lr_min``, ``epochs``).
      epoch: 0-based epoch; the rate is constant within an epoch.

    Returns:
      float32 ``lr_min + (lr - lr_min) * (1 + cos(pi * epoch / epochs)) / 2``.
    """

    def get(k: str) -> Any:
        return setup[k] if isinstance(setup, dict) else getattr(setup, k)

    lr, lr_min = float(get("lr")), float(get("lr_min"))
    frac = jnp.asarray(epoch, jnp.float32) / get("epochs")
    return lr_min + 0.5 * (lr - lr_min) * (1 + jnp.cos(jnp.pi * frac))


def initial_alphas(key: jax.Array, setup: Setup) -> dict[str, jax.Array]:
    """The alphas' initial draw ``alpha_std * N(0, 1)``, ``[14, K]`` per cell kind.

    Args:
      key: PRNG key (the run derives it from the seed, see :func:`create_train_state`).
      setup: run settings.
    """
    k = get_supernet(setup.net).num_ops
    kn, kr = jax.random.split(key)
    shape = (NUM_EDGES, k)
    return {
        "normal": setup.alpha_std * jax.random.normal(kn, shape, jnp.float32),
        "reduce": setup.alpha_std * jax.random.normal(kr, shape, jnp.float32),
    }


@functools.lru_cache(maxsize=8)
def _init_fn(
    net_config: SupernetConfig, image_shape: tuple[int, ...]
) -> Callable[[jax.Array], dict[str, Any]]:
    """``jit(Supernet.init)`` for one structure, compiled once per process.

    Run eagerly, ``init`` dispatches one small program per parameter leaf.
    """
    net = get_supernet(net_config)
    return jax.jit(lambda k: net.init(k, image_shape))


def create_train_state(
    key: jax.Array, setup: Setup, image_shape: Sequence[int]
) -> TrainState:
    """Initialises the supernet (PyTorch-style init), the alphas and the optimisers.

    Args:
      key: PRNG key of the state; split into the weight-init and the alpha keys.
      setup: run settings.
      image_shape: ``(H, W, C)`` of the images.

    Returns:
      The initial :class:`TrainState` (BatchNorm running mean 0, variance 1).
    """
    k_init, k_alpha = jax.random.split(key)
    variables = _init_fn(setup.net, tuple(int(d) for d in image_shape))(k_init)
    params, batch_stats = variables["params"], variables["batch_stats"]
    alphas = initial_alphas(k_alpha, setup)
    arch_state = arch_optimizer(setup).init(alphas) if setup.mode == "darts1" else ()
    return TrainState(
        params=params,
        batch_stats=batch_stats,
        opt_state=weight_optimizer(setup).init(params),
        alphas=alphas,
        arch_opt_state=arch_state,
    )


# ------------------------------------------------------------------------ steps


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def _augment(key: jax.Array, images: jax.Array, setup: Setup) -> jax.Array:
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
    lr: float | jax.Array,
    setup: Setup,
    valid_images: jax.Array | None = None,
    valid_labels: jax.Array | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One training step on one batch, with on-device augmentation.

    ``weights`` mode: one SGD step on the supernet weights, the alphas fixed.
    ``darts1`` mode: first an Adam step on the alphas with the loss of the
    validation batch (train-mode BN, running statistics updated, as in DARTS), then
    the SGD weight step with the updated alphas.

    Args:
      state: the training state.
      images: ``[B, H, W, C]`` raw training images (uint8, or float in [0, 1]).
      labels: ``[B]`` int32 labels.
      key: PRNG key of this step (augmentation, the noise op).
      lr: learning rate of the weight step.
      setup: static settings.
      valid_images: ``[B, H, W, C]`` raw validation images (``darts1`` mode only).
      valid_labels: ``[B]`` int32 (``darts1`` mode only).

    Returns:
      ``(state, metrics)``; ``metrics`` = ``loss_sum`` (float32, the summed
      cross-entropy of the weight step's batch), ``correct`` and ``count`` (int32),
      and ``arch_loss_sum`` (the alpha step's summed cross-entropy; 0 in
      ``weights`` mode).
    """
    net = get_supernet(setup.net)
    k_aug, k_noise, k_vaug, k_vnoise = jax.random.split(key, 4)
    alphas, batch_stats = state.alphas, state.batch_stats
    arch_opt_state = state.arch_opt_state
    arch_loss_sum = jnp.zeros((), jnp.float32)

    if setup.mode == "darts1":
        xv = _augment(k_vaug, valid_images, setup)

        def arch_loss(a):
            wn, wr = net.edge_weights(a["normal"], a["reduce"])
            logits, _, new_bs = net.apply_dense(
                {"params": state.params, "batch_stats": batch_stats},
                wn,
                wr,
                xv,
                train=True,
                key=k_vnoise,
                mutable=True,
            )
            ce = _cross_entropy(logits, valid_labels)
            return ce.mean(), (ce.sum(), new_bs)

        a_grads, (arch_loss_sum, batch_stats) = jax.grad(arch_loss, has_aux=True)(
            alphas
        )
        a_updates, arch_opt_state = arch_optimizer(setup).update(
            a_grads, arch_opt_state, alphas
        )
        alphas = optax.apply_updates(alphas, a_updates)

    x = _augment(k_aug, images, setup)
    wn, wr = net.edge_weights(alphas["normal"], alphas["reduce"])
    wn, wr = jax.lax.stop_gradient(wn), jax.lax.stop_gradient(wr)

    def loss_fn(params):
        logits, _, new_bs = net.apply_dense(
            {"params": params, "batch_stats": batch_stats},
            wn,
            wr,
            x,
            train=True,
            key=k_noise,
            mutable=True,
        )
        ce = _cross_entropy(logits, labels)
        return ce.mean(), (ce.sum(), logits, new_bs)

    grads, (ce_sum, logits, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = weight_optimizer(setup).update(
        grads, state.opt_state, state.params
    )
    params = jax.tree.map(lambda p, u: p - lr * u, state.params, updates)
    metrics = {
        "loss_sum": ce_sum.astype(jnp.float32),
        "correct": (logits.argmax(-1) == labels).sum().astype(jnp.int32),
        "count": jnp.asarray(labels.shape[0], jnp.int32),
        "arch_loss_sum": arch_loss_sum.astype(jnp.float32),
    }
    new_state = TrainState(params, batch_stats, opt_state, alphas, arch_opt_state)
    return new_state, metrics


def eval_step(
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
    key: jax.Array,
    setup: Setup,
) -> dict[str, jax.Array]:
    """Validation metrics of one batch in eval mode (BN running statistics).

    Args:
      state: the training state.
      images: ``[B, H, W, C]`` raw images.
      labels: ``[B]`` int32 labels.
      mask: ``[B]`` bool, False for padding rows.
      key: PRNG key (the augmentation when ``augment_valid``; the noise op).
      setup: static settings.

    Returns:
      ``loss_sum`` (float32), ``correct``, ``correct5`` (top-5) and ``count``
      (int32) over the valid rows.
    """
    from jaxdarts.data import normalize

    net = get_supernet(setup.net)
    k_aug, k_noise = jax.random.split(key)
    if setup.augment_valid:
        x = _augment(k_aug, images, setup)
    else:
        x = normalize(images, setup.mean, setup.std)
    wn, wr = net.edge_weights(state.alphas["normal"], state.alphas["reduce"])
    logits, _, _ = net.apply_dense(
        {"params": state.params, "batch_stats": state.batch_stats},
        wn,
        wr,
        x,
        train=False,
        key=k_noise,
    )
    ce = _cross_entropy(logits, labels)
    k = min(5, logits.shape[-1])
    top = jax.lax.top_k(logits, k)[1]
    in_top = (top == labels[:, None]).any(-1)
    return {
        "loss_sum": jnp.where(mask, ce, 0.0).sum(),
        "correct": ((logits.argmax(-1) == labels) & mask).sum().astype(jnp.int32),
        "correct5": (in_top & mask).sum().astype(jnp.int32),
        "count": mask.sum().astype(jnp.int32),
    }


def _zero_sums() -> dict[str, jax.Array]:
    return {
        "loss_sum": jnp.zeros((), jnp.float32),
        "correct": jnp.zeros((), jnp.int32),
        "count": jnp.zeros((), jnp.int32),
        "arch_loss_sum": jnp.zeros((), jnp.float32),
    }


def epoch_keys(key: jax.Array, epoch: int | jax.Array) -> tuple[jax.Array, ...]:
    """``(train shuffle, valid shuffle, step root, eval)`` keys of an epoch.

    They depend only on the run key (from the seed) and the epoch.
    """
    return tuple(jax.random.split(jax.random.fold_in(key, epoch), 4))


@functools.partial(
    jax.jit, static_argnames=("setup",), donate_argnames=("state", "sums")
)
def train_chunk(
    state: TrainState,
    sums: dict[str, jax.Array],
    images: jax.Array,
    labels: jax.Array,
    valid_images: jax.Array,
    valid_labels: jax.Array,
    key: jax.Array,
    epoch: jax.Array,
    start: jax.Array,
    setup: Setup,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """Steps ``start .. start + steps_per_call - 1`` of an epoch as one ``lax.scan``.

    Steps past the end of the epoch are skipped (``lax.cond``, only needed when
    ``steps_per_call`` does not divide ``steps_per_epoch``), so every call has the
    same shape and compiles once. Batch ``j`` of epoch ``e`` and its step key
    depend only on ``(key, e, j)``.

    Args:
      state: the training state (donated).
      sums: running metric sums of the epoch (donated).
      images: ``[N, H, W, C]`` the training half (on device).
      labels: ``[N]`` int32.
      valid_images: ``[M, H, W, C]`` the validation half (used in ``darts1`` mode).
      valid_labels: ``[M]`` int32.
      key: the run's PRNG key (from the seed).
      epoch: int32 scalar, 0-based epoch.
      start: int32 scalar, first step of this call.
      setup: static settings.

    Returns:
      ``(state, sums)`` after the chunk.
    """
    from jaxdarts.data import batch_indices

    k_train, k_valid, step_root, _ = epoch_keys(key, epoch)
    idx = batch_indices(k_train, setup.num_train, setup.batch_size)
    vidx = (
        batch_indices(k_valid, setup.num_valid, setup.batch_size)
        if setup.mode == "darts1"
        else None
    )
    lr = learning_rate(setup, epoch)

    def do_step(carry, j):
        st, sm = carry
        b = idx[j]
        vx = vy = None
        if vidx is not None:
            vb = vidx[j]
            # split over the devices under --devices N (else a no-op)
            vx = sharding.constrain_batch(jnp.take(valid_images, vb, axis=0))
            vy = sharding.constrain_batch(jnp.take(valid_labels, vb, axis=0))
        st, m = train_step(
            st,
            sharding.constrain_batch(jnp.take(images, b, axis=0)),
            sharding.constrain_batch(jnp.take(labels, b, axis=0)),
            jax.random.fold_in(step_root, j),
            lr,
            setup,
            vx,
            vy,
        )
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


def train_epoch(
    state: TrainState,
    data: dict[str, jax.Array],
    key: jax.Array,
    epoch: int,
    setup: Setup,
    *,
    start_step: int = 0,
    sums: dict[str, jax.Array] | None = None,
    on_chunk: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[TrainState, dict[str, jax.Array], int]:
    """Runs (the rest of) one epoch as a short host loop over jitted chunks.

    Args:
      state: the training state (its buffers are donated).
      data: on-device ``train_x``, ``train_y``, ``valid_x``, ``valid_y`` (unpadded).
      key: the run's PRNG key.
      epoch: 0-based epoch.
      setup: static settings.
      start_step: first step (a resumed epoch).
      sums: metric sums so far in this epoch (a resumed epoch).
      on_chunk: called with the number of steps done after each chunk.
      should_stop: polled after each chunk; True stops the epoch early.

    Returns:
      ``(state, sums, step)``: ``step == setup.steps_per_epoch`` when the epoch
      is complete, else the first step not yet done.
    """
    sums = _zero_sums() if sums is None else sums
    step = start_step
    while step < setup.steps_per_epoch:
        state, sums = train_chunk(
            state,
            sums,
            data["train_x"],
            data["train_y"],
            data["valid_x"],
            data["valid_y"],
            key,
            jnp.int32(epoch),
            jnp.int32(step),
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
def _evaluate(state, images, labels, mask, key, setup):
    b = setup.eval_batch_size
    shaped = [a.reshape(-1, b, *a.shape[1:]) for a in (images, labels, mask)]
    keys = jax.random.split(key, shaped[0].shape[0])

    def body(sums, batch):
        *arrays, k = batch
        arrays = sharding.constrain_batch(arrays)  # --devices N
        m = eval_step(state, *arrays, k, setup)
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


def evaluate(
    state: TrainState,
    images: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
    key: jax.Array,
    setup: Setup,
) -> dict[str, float]:
    """Loss and accuracy over a (padded) set in one jitted scan, in eval mode.

    Args:
      state: the training state.
      images: ``[M, H, W, C]`` with ``M`` a multiple of ``setup.eval_batch_size``
        (see :func:`pad_eval_set`).
      labels: ``[M]`` int32.
      mask: ``[M]`` bool, False on padding.
      key: PRNG key (augmentation if ``augment_valid``; the noise op).
      setup: static settings.

    Returns:
      ``{"loss", "accuracy", "top5"}``: mean cross-entropy and fractions correct.
    """
    s = jax.device_get(_evaluate(state, images, labels, mask, key, setup))
    n = max(int(s["count"]), 1)
    return {
        "loss": float(s["loss_sum"]) / n,
        "accuracy": int(s["correct"]) / n,
        "top5": int(s["correct5"]) / n,
    }


# --------------------------------------------------------------- supernet files


def _supernet_meta(
    setup: Setup,
    config: dict[str, Any],
    image_shape: Sequence[int],
    dataset: str,
    alphas: dict[str, Any],
    epoch: int,
    valid: dict[str, float],
) -> dict[str, Any]:
    net = setup.net
    return {
        "format": _META_FORMAT,
        "space": net.space,
        "channels": net.channels,
        "layers": net.layers,
        "num_classes": net.num_classes,
        "stem_multiplier": net.stem_multiplier,
        "swap_cells": net.swap_cells,
        "eps": net.eps,
        "image_shape": [int(d) for d in image_shape],
        "dataset": dataset,
        "mean": list(setup.mean),
        "std": list(setup.std),
        "seed": config["seed"],
        "split_seed": config["seed"],
        "split_note": (
            "weights trained on split_indices(n_train, split_seed)[0]; the second "
            "half was the validation set"
        ),
        "mode": setup.mode,
        "compat": config["compat"],
        "epoch": int(epoch),
        "epochs": setup.epochs,
        "valid_acc": valid["accuracy"],
        "valid_loss": valid["loss"],
        "alphas": {k: np.asarray(v, np.float32).tolist() for k, v in alphas.items()},
    }


def save_supernet(
    path: str | os.PathLike, variables: dict[str, Any], meta: dict[str, Any]
) -> Path:
    """Writes (or atomically replaces) a supernet folder.

    The folder is written beside ``path`` under a temporary name and renamed into
    place, so a crash never leaves a half-written ``supernet/``.

    Args:
      path: the folder (``<run>/supernet``).
      variables: ``{"params", "batch_stats"}``.
      meta: JSON-able description (written as ``supernet.json`` inside).

    Returns:
      The absolute folder path.
    """
    from jaxdarts.checkpoint import save_pytree
    from jaxdarts.io import atomic_write_json

    path = Path(path).expanduser().absolute()
    tmp = path.with_name(f".{path.name}.tmp")
    old = path.with_name(f".{path.name}.old")
    # multi-host: every process takes part in the Orbax save; process 0 does the rest
    writer = sharding.is_writer()
    for p in (tmp, old):
        if writer and p.exists():
            shutil.rmtree(p)
    sharding.barrier("supernet-clean")
    tree = {"params": variables["params"], "batch_stats": variables["batch_stats"]}
    save_pytree(tmp, tree)
    if writer:
        atomic_write_json(tmp / SUPERNET_META, meta)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        if old.exists():
            shutil.rmtree(old)
    sharding.barrier("supernet-saved")
    return path


def _supernet_folder(path: str | os.PathLike) -> Path:
    p = Path(path).expanduser().absolute()
    if (p / SUPERNET_META).is_file():
        return p
    if (p / SUPERNET_DIR / SUPERNET_META).is_file():
        return p / SUPERNET_DIR
    if not p.exists():
        raise FileNotFoundError(f"no pre-trained supernet: {p} does not exist")
    hint = ""
    if (p / "config.json").is_file():
        hint = (
            " It looks like a run folder without a finished epoch yet; continue it "
            f"with: python -m jaxdarts.pretrain --resume {p}"
        )
    raise FileNotFoundError(
        f"no pre-trained supernet in {p}: expected {SUPERNET_DIR}/{SUPERNET_META} "
        f"(a pre-training run folder) or {SUPERNET_META} (its {SUPERNET_DIR}/ "
        f"sub-folder).{hint}"
    )


def supernet_config_from_meta(
    meta: dict[str, Any], impl: str = "auto"
) -> SupernetConfig:
    """The :class:`SupernetConfig` of a saved supernet's meta."""
    return SupernetConfig(
        space=meta["space"],
        channels=int(meta["channels"]),
        layers=int(meta["layers"]),
        num_classes=int(meta["num_classes"]),
        stem_multiplier=int(meta["stem_multiplier"]),
        impl=impl,
        swap_cells=bool(meta["swap_cells"]),
        eps=float(meta.get("eps", SupernetConfig.eps)),
    )


# Keys of `expect` that do not change the weights and are never compared.
_EXPECT_SKIP = ("impl",)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, str) or isinstance(b, str):
        if isinstance(a, str) and isinstance(b, str):
            try:
                return get_space(a).name == get_space(b).name
            except ValueError:
                return a == b
        return False
    if _is_real(a) and _is_real(b) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def _show(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(_show(x) for x in v) + ")"
    return repr(v)


def load_supernet(
    path: str | os.PathLike, expect: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Loads pre-trained supernet weights.

    Args:
      path: a pre-training run folder, or its ``supernet/`` sub-folder.
      expect: optional values the weights must have been trained with: any
        :class:`SupernetConfig` fields (``space``, ``channels``, ``layers``,
        ``num_classes``, ``stem_multiplier``, ``swap_cells``, ``eps``; ``impl`` is
        ignored as it does not change the weights), ``image_shape``, or any other
        key of the meta (``dataset``, ``seed``, ...). A ``SupernetConfig`` works too.

    Returns:
      ``(variables, meta)``: ``{"params", "batch_stats"}`` as jax arrays, ready for
      :meth:`jaxdarts.supernet.Supernet.apply_dense`, and the saved description
      (``supernet.json``; ``image_shape`` as a tuple). Build the network with
      ``Supernet(supernet_config_from_meta(meta))``.

    Raises:
      FileNotFoundError: no supernet in ``path``.
      ValueError: ``expect`` differs from the saved meta (every difference is
        listed), or names a key the meta does not have.
    """
    from jaxdarts.checkpoint import load_pytree

    folder = _supernet_folder(path)
    meta = json.loads((folder / SUPERNET_META).read_text())
    if meta.get("format") != _META_FORMAT:
        raise ValueError(
            f"{folder / SUPERNET_META} is not a jaxdarts supernet description "
            f"(format {meta.get('format')!r}, expected {_META_FORMAT!r})"
        )
    meta["image_shape"] = tuple(int(d) for d in meta["image_shape"])
    if expect is not None:
        if dataclasses.is_dataclass(expect):
            expect = dataclasses.asdict(expect)
        unknown = [k for k in expect if k not in meta and k not in _EXPECT_SKIP]
        if unknown:
            raise ValueError(
                f"cannot check {unknown} against the supernet in {folder}: its "
                f"description has {sorted(k for k in meta if k != 'alphas')}"
            )
        diff = [
            k
            for k, v in expect.items()
            if k not in _EXPECT_SKIP and not _same(meta[k], v)
        ]
        if diff:
            saved = ", ".join(f"{k} {_show(meta[k])}" for k in diff)
            asked = ", ".join(f"{k} {_show(expect[k])}" for k in diff)
            raise ValueError(
                f"the supernet in {folder} was trained for {saved}, but the run asks "
                f"for {asked}. Pre-train a matching supernet (python -m "
                "jaxdarts.pretrain with the same settings) or change the run's "
                "settings."
            )
    init = _init_fn(supernet_config_from_meta(meta), meta["image_shape"])
    target = jax.eval_shape(init, jax.random.key(0))
    variables = load_pytree(folder, target)
    return variables, meta


# ------------------------------------------------------------------------- run


def _commit(tree: Any, mesh: Any = None) -> Any:
    """Places ``tree`` on the default device, committed (replicated over ``mesh``).

    Restored checkpoints are committed arrays and ``jit`` compiles separately for
    committed and uncommitted arguments: committing everything up front keeps one
    compiled program per run, fresh or resumed.
    """
    if mesh is not None:
        return sharding.replicate(tree, mesh)
    return jax.device_put(tree, jax.local_devices()[0])


def _data_mesh(devices: int | None, batch_size: int) -> Any:
    """``--devices N``: a mesh for data parallelism (None: one device)."""
    if devices is None:
        return None
    if devices < 1 or batch_size % devices:
        raise ValueError(
            f"--devices {devices} must be >= 1 and divide the batch size {batch_size}"
        )
    return sharding.make_mesh(devices)


def _count(tree: Any) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def _default_out(config: dict[str, Any]) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"pretrain-{config['space']}-{stamp}")


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
    """Pre-trains a supernet; writes the run folder.

    Args:
      config: resolved config (:func:`make_config`).
      out: run folder (default ``runs/pretrain-<space>-<time>``).
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
      ValueError: a bad config, or a batch larger than the training half.
    """
    from jaxdarts.data import load_dataset, split_indices
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
    mesh = _data_mesh(devices, config["batch_size"])  # --devices N

    t_load = time.perf_counter()
    ds = load_dataset(config["dataset"], config["data_dir"])
    train_idx, valid_idx = split_indices(len(ds.train_labels), config["seed"])
    setup = make_setup(
        config,
        ds.image_shape,
        ds.num_classes,
        len(train_idx),
        len(valid_idx),
        ds.mean,
        ds.std,
    )
    if not resume:
        rundir = RunDir.create(out, config, overwrite=overwrite)
    setup_logging(rundir.path)
    log.info(
        "dataset %s: %d train images of %s, %d classes, split %d/%d (seed %d) "
        "(loaded in %.1fs)",
        ds.name,
        len(ds.train_labels),
        "x".join(map(str, ds.image_shape)),
        ds.num_classes,
        len(train_idx),
        len(valid_idx),
        config["seed"],
        time.perf_counter() - t_load,
    )

    key = jax.random.key(config["seed"])
    state_key, run_key = jax.random.split(key)
    state = _commit(create_train_state(state_key, setup, ds.image_shape), mesh)
    n_params = _count(state.params)
    log.info(
        "supernet: space %s, %d cells, C=%d, %.3fM parameters, mode %s%s",
        setup.net.space,
        setup.net.layers,
        setup.net.channels,
        n_params / 1e6,
        setup.mode,
        ", compat dartsrl (normal/reduce swap)" if setup.net.swap_cells else "",
    )

    ckpt_tree = {
        "state": state,
        "epoch": np.int32(0),
        "step": np.int32(0),
        "sums": _zero_sums(),
        "best_acc": np.float64(-1.0),
        "best_epoch": np.int32(0),
    }
    ckpt = rundir.checkpointer(max_to_keep=config["max_to_keep"])
    spe = setup.steps_per_epoch
    epoch, step, sums = 0, 0, None
    best_acc, best_epoch = -1.0, 0
    restored_any = False
    if resume and ckpt.latest_step() is not None:
        restored = ckpt.restore(None, ckpt_tree)
        state = _commit(restored["state"], mesh)
        epoch, step = int(restored["epoch"]), int(restored["step"])
        sums = _commit(restored["sums"], mesh)
        best_acc, best_epoch = float(restored["best_acc"]), int(restored["best_epoch"])
        rundir.truncate_metrics(epoch, key="epoch")
        restored_any = True
        log.info("resumed from epoch %d, step %d of %d", epoch, step, spe)
    elif resume:
        rundir.truncate_metrics(-1, key="epoch")
        log.info("no checkpoint in %s yet: starting from the beginning", rundir.path)

    data = {
        "train_x": _commit(ds.train_images[train_idx], mesh),
        "train_y": _commit(ds.train_labels[train_idx].astype(np.int32), mesh),
        "valid_x": _commit(ds.train_images[valid_idx], mesh),
        "valid_y": _commit(ds.train_labels[valid_idx].astype(np.int32), mesh),
    }
    padded = pad_eval_set(
        ds.train_images[valid_idx],
        ds.train_labels[valid_idx].astype(np.int32),
        setup.eval_batch_size,
    )
    eval_x, eval_y, eval_mask = (_commit(a, mesh) for a in padded)

    def validate(e: int) -> dict[str, float]:
        with sharding.use_mesh(mesh):
            return evaluate(
                state, eval_x, eval_y, eval_mask, epoch_keys(run_key, e)[3], setup
            )

    def save(epoch_: int, step_: int, sums_) -> None:
        tree = {
            "state": state,
            "epoch": np.int32(epoch_),
            "step": np.int32(step_),
            "sums": _zero_sums() if sums_ is None else sums_,
            "best_acc": np.float64(best_acc),
            "best_epoch": np.int32(best_epoch),
        }
        ckpt.save(epoch_ * spe + step_, tree)

    if not restored_any:
        t0 = time.perf_counter()
        v0 = validate(0)
        rundir.append_metrics(
            {
                "epoch": 0,
                "step": 0,
                "valid_loss": v0["loss"],
                "valid_acc": v0["accuracy"],
                "valid_top5": v0["top5"],
                "time": time.perf_counter() - t0,
            }
        )
        log.info(
            "before training: valid loss %.4f, valid acc %.2f%%",
            v0["loss"],
            100 * v0["accuracy"],
        )

    stop_at = (
        config["epochs"] if stop_after is None else min(stop_after, config["epochs"])
    )
    interrupted = False
    bar = progress(
        config["epochs"] * spe, "pretrain", initial=epoch * spe + step, unit="step"
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
                    data,
                    run_key,
                    epoch,
                    setup,
                    start_step=step,
                    sums=_commit(_zero_sums(), mesh) if sums is None else sums,
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
            v = validate(epoch + 1)
            n = max(int(s["count"]), 1)
            improved = v["accuracy"] > best_acc
            if improved:
                best_acc, best_epoch = v["accuracy"], epoch + 1
                meta = _supernet_meta(
                    setup, config, ds.image_shape, ds.name, state.alphas, epoch + 1, v
                )
                save_supernet(
                    rundir.path / SUPERNET_DIR,
                    {"params": state.params, "batch_stats": state.batch_stats},
                    meta,
                )
            record = {
                "epoch": epoch + 1,
                "step": (epoch + 1) * spe,
                "lr": float(learning_rate(setup, epoch)),
                "train_loss": float(s["loss_sum"]) / n,
                "train_acc": int(s["correct"]) / n,
                "valid_loss": v["loss"],
                "valid_acc": v["accuracy"],
                "valid_top5": v["top5"],
                "best_valid_acc": best_acc,
                "images_per_s": (spe - first) * setup.batch_size / t_train,
                "time": time.perf_counter() - t0,
            }
            if setup.mode == "darts1":
                record["arch_loss"] = float(s["arch_loss_sum"]) / n
            rundir.append_metrics(record)
            bar.set_postfix(
                epoch=epoch + 1,
                loss=f"{record['train_loss']:.3f}",
                valid_acc=f"{record['valid_acc']:.3f}",
            )
            log.info(
                "epoch %d/%d: lr %.5f, train loss %.4f acc %.2f%%, valid loss %.4f "
                "acc %.2f%%%s, %.0f img/s",
                epoch + 1,
                setup.epochs,
                record["lr"],
                record["train_loss"],
                100 * record["train_acc"],
                record["valid_loss"],
                100 * record["valid_acc"],
                " (best, saved)" if improved else "",
                record["images_per_s"],
            )
            epoch, step, sums = epoch + 1, 0, None
            if epoch % config["checkpoint_every"] == 0 or epoch == stop_at:
                save(epoch, 0, None)
            if flag.requested:
                interrupted = epoch < config["epochs"]
                if epoch % config["checkpoint_every"]:
                    save(epoch, 0, None)
                break
    finally:
        bar.close()
        if guard is not None:
            guard.__exit__(None, None, None)
        ckpt.close()

    if epoch < config["epochs"]:
        why = "interrupted" if interrupted else f"stopped after epoch {epoch}"
        log.info(
            "%s at epoch %d, step %d of %d; checkpoint saved. Continue with: "
            "python -m jaxdarts.pretrain --resume %s",
            why,
            epoch,
            step,
            spe,
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
    initial = next((m for m in metrics if m["epoch"] == 0), None)
    trained = [m for m in metrics if m["epoch"] > 0]
    final = trained[-1]
    result = {
        "best_valid_acc": best_acc,
        "best_epoch": best_epoch,
        "final_valid_acc": final["valid_acc"],
        "final_valid_loss": final["valid_loss"],
        "final_train_loss": final["train_loss"],
        "initial_valid_loss": initial["valid_loss"] if initial else None,
        "initial_valid_acc": initial["valid_acc"] if initial else None,
        "params": n_params,
        "epochs": config["epochs"],
        "space": setup.net.space,
        "mode": setup.mode,
        "dataset": ds.name,
        "train_time_s": float(sum(m["time"] for m in trained)),
        "images_per_s": float(np.median([m["images_per_s"] for m in trained])),
        "supernet": str(rundir.path / SUPERNET_DIR),
        "run_dir": str(rundir.path),
    }
    if setup.mode == "darts1":
        from jaxdarts.genotypes import derive_genotype, save_genotype_json

        alphas = jax.device_get(state.alphas)
        genotype = derive_genotype(alphas["normal"], alphas["reduce"], setup.net.space)
        save_genotype_json(
            rundir.path / "genotype.json",
            genotype,
            setup.net.space,
            alpha_normal=np.asarray(alphas["normal"]).tolist(),
            alpha_reduce=np.asarray(alphas["reduce"]).tolist(),
        )
        result["genotype_json"] = str(rundir.path / "genotype.json")
    rundir.write_json("result.json", result)
    log.info(
        "done: best valid acc %.2f%% at epoch %d (valid loss %.4f -> %.4f over %d "
        "epochs). Supernet in %s; outputs in %s (config.json, metrics.jsonl, "
        "result.json, checkpoints/, log.txt)",
        100 * best_acc,
        best_epoch,
        result["initial_valid_loss"] if initial else float("nan"),
        final["valid_loss"],
        config["epochs"],
        result["supernet"],
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
    """The command-line parser."""
    p = argparse.ArgumentParser(
        prog="python -m jaxdarts.pretrain",
        description="Pre-train the supernet's weights with the alphas frozen at their "
        "near-uniform initial draw (the reference's train_weights.py); the best "
        "validation-accuracy weights go to <out>/supernet/.",
    )
    p.add_argument("--preset", choices=sorted(PRESETS), help="default: paper")
    p.add_argument(
        "--mode",
        choices=MODES,
        help="weights (default, the reference) or darts1 (first-order DARTS: also "
        "train the alphas on the validation half)",
    )
    p.add_argument("--space", help="search space: darts, s1-s4, nas-bench-201")
    p.add_argument("--dataset", help="digits, cifar10, a TFDS name or npz:PATH")
    p.add_argument("--data-dir", help="TFDS data directory")
    p.add_argument("--out", help="run folder (default runs/pretrain-<space>-<time>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR")
    p.add_argument(
        "--overwrite", action="store_true", help="replace --out if it exists"
    )
    p.add_argument("--seed", type=int, help="seed of the init, alphas, split, data")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--channels", type=int, help="initial channels C")
    p.add_argument("--layers", type=int, help="number of cells")
    p.add_argument("--cutout", type=int, help="cutout side (0 = off; reference: 16)")
    p.add_argument(
        "--compat",
        choices=["dartsrl"],
        help="dartsrl: reproduce the reference's normal/reduce alpha swap",
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
        "mode": args.mode,
        "space": args.space,
        "dataset": args.dataset,
        "data_dir": args.data_dir,
        "seed": args.seed,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "channels": args.channels,
        "layers": args.layers,
        "cutout": args.cutout,
        "compat": args.compat,
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
        base.update(given)
        return make_config(preset, **base)
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
    except (FileNotFoundError, ValueError) as e:
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
