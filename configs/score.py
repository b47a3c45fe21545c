"""Config of ``python -m jaxdarts.score``: base, presets, schema.

``paper`` scores on CIFAR-10 with the paper's supernet (C=16, 8 cells); ``quick`` on
the embedded digits data with the shared quick supernet (``configs/common.py``), the
one ``pretrain --preset quick`` writes. A ``--supernet-ckpt`` fixes the space and
size: ``supernet.channels``/``layers``/``space`` left at null take the checkpoint's.
"""

from jaxdarts.configs.common import (
    DATA_SCHEMA,
    IMPL_HELP,
    IMPLS,
    NWOT_FLAVOURS,
    QUICK_DATA,
    QUICK_SUPERNET,
    REWARDS,
    SPACES,
    checkpoint_key,
    compat_key,
    preset_key,
)

from jaxdarts.config import ConfigError, Key

#: BatchNorm modes of the reward forward.
BN_MODES = ("eval", "batch")

#: Default reward batch of each NWOT flavour (the reference: 64; Mellor et al.: 128).
FLAVOUR_BATCH = {"reference": 64, "original": 128}


def get_config() -> dict:
    """Every default of a scoring run (the paper's setting)."""
    return {
        "preset": "paper",
        "seeds": 1,
        "compat": None,
        "data": {"dataset": "cifar10", "data_dir": None},
        "supernet": {
            "space": None,
            "channels": None,
            "layers": None,
            "impl": "auto",
            "checkpoint": None,
        },
        "reward": {
            "kind": "nwot",
            "path": "discrete",
            "batch_size": None,
            "nwot_flavour": "reference",
            "bn_mode": "eval",
        },
    }


PRESETS: dict[str, dict] = {
    "paper": {},
    "quick": {"data": dict(QUICK_DATA), "supernet": dict(QUICK_SUPERNET)},
}

#: Untrained supernet size when ``supernet.channels``/``layers`` are null and no
#: checkpoint gives them (the paper's).
DEFAULT_CHANNELS, DEFAULT_LAYERS = 16, 8

SCHEMA: dict[str, Key] = {
    "preset": preset_key(PRESETS),
    "seeds": Key(
        "seeds i = 0..N-1: seed i initialises the supernet and draws the "
        "batch; results are mean and std over seeds",
        "int",
        lo=1,
    ),
    "compat": compat_key("normal/reduce cell swap"),
    **DATA_SCHEMA,
    "supernet.space": Key(
        "search space (null: the checkpoint's, else the one the "
        "genotype files name, else darts)",
        "str",
        choices=SPACES,
        nullable=True,
    ),
    "supernet.channels": Key(
        "initial channels C (null: the checkpoint's, else 16)",
        "int",
        lo=2,
        nullable=True,
    ),
    "supernet.layers": Key(
        "cells (null: the checkpoint's, else 8)", "int", lo=1, nullable=True
    ),
    "supernet.impl": Key(IMPL_HELP, "str", choices=IMPLS),
    "supernet.checkpoint": checkpoint_key("an untrained supernet per seed"),
    "reward.kind": Key(
        "score: nwot (log-determinant of the ReLU-code kernel), acc "
        "(batch accuracy) or loss (negative cross-entropy)",
        "str",
        choices=REWARDS,
    ),
    "reward.path": Key(
        "discrete: run only each edge's op; dense: every op, "
        "weighted by one-hot weights",
        "str",
        choices=("discrete", "dense"),
    ),
    "reward.batch_size": Key(
        "images per score (null: 64, or 128 for the original NWOT flavour)",
        "int",
        lo=1,
        nullable=True,
    ),
    "reward.nwot_flavour": Key(
        "reference: eval-mode BN; original: Mellor et al. (train-mode BN, batch 128)",
        "str",
        choices=NWOT_FLAVOURS,
    ),
    "reward.bn_mode": Key(
        "BatchNorm of the scoring forward: eval (running statistics, as the "
        "reference) or batch (statistics of the scored batch). "
        "nwot_flavour=original always uses batch statistics",
        "str",
        choices=BN_MODES,
    ),
}


def batch_size(config: dict) -> int:
    """``reward.batch_size``, or the NWOT flavour's default."""
    r = config["reward"]
    if r["batch_size"] is not None:
        return r["batch_size"]
    return FLAVOUR_BATCH[r["nwot_flavour"]] if r["kind"] == "nwot" else 64


def check(config: dict) -> None:
    """Rules that tie several keys together."""
    r = config["reward"]
    if r["kind"] == "nwot" and batch_size(config) < 2:
        raise ConfigError(
            "reward.batch_size must be >= 2 for the nwot reward (the kernel of one "
            f"image says nothing), got {r['batch_size']}"
        )
    if r["nwot_flavour"] == "original" and r["kind"] != "nwot":
        raise ConfigError(
            "reward.nwot_flavour=original applies to the nwot reward only"
        )
    original = FLAVOUR_BATCH["original"]
    if r["nwot_flavour"] == "original" and batch_size(config) != original:
        raise ConfigError(
            f"reward.nwot_flavour=original scores on one fixed batch of {original} "
            f"images, got reward.batch_size={r['batch_size']}: leave it unset (null)"
        )
    channels = config["supernet"]["channels"]
    if channels is not None and channels % 2:
        raise ConfigError(
            f"supernet.channels must be an even number >= 2, got {channels}"
        )
