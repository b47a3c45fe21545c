"""Config of ``python -m jaxdarts.pretrain``: base and presets.

A run's config = ``get_config()`` + ``PRESETS[preset]`` + flags and ``--set
KEY=VALUE`` (see :mod:`jaxdarts.config`). ``paper``: the reference's
``train_weights.py`` on CIFAR-10 (C=16, 8 cells, 50 epochs, batch 64, learning rate
0.025 cosine-annealed to 0.001). ``quick``: the shared small supernet of
``configs/common.py`` on the embedded digits data, the one ``search --preset quick``
expects.
"""

from jaxdarts.configs import search, training
from jaxdarts.configs.common import (
    DATA_SCHEMA,
    IMPL_HELP,
    QUICK_DATA,
    QUICK_SUPERNET,
    SUPERNET_SCHEMA,
    compat_key,
    preset_key,
    seed_key,
)

from jaxdarts.config import ConfigError, Key

#: ``weights``: the reference (weights only, alphas frozen); ``darts1``: first-order
#: DARTS (alternating alpha and weight steps).
MODES = ("weights", "darts1")


def get_config() -> dict:
    """Every default of a pre-training run (the paper's setting)."""
    return {
        "preset": "paper",
        "seed": 0,
        "mode": "weights",
        "compat": None,
        # the data and the supernet that search's paper preset expects
        "data": search.get_config()["data"],
        "supernet": {
            **{
                k: v
                for k, v in search.get_config()["supernet"].items()
                if k not in ("checkpoint", "edges")  # search-only keys
            },
            "stem_multiplier": 3,
            "alpha_std": 1e-3,
        },
        **training.groups(lr=0.025, lr_min=0.001, epochs=50, batch_size=64, cutout=0),
        "arch": {"lr": 3e-4, "beta1": 0.5, "beta2": 0.999, "weight_decay": 1e-3},
        "eval": {"augment": False},
    }


PRESETS: dict[str, dict] = {
    "paper": {},
    "quick": {
        "data": dict(QUICK_DATA),
        "supernet": dict(QUICK_SUPERNET),
        "optim": {"lr": 0.05},
        "train": {
            "epochs": 5,
            "batch_size": 32,
            "eval_batch_size": 240,
            "steps_per_call": 22,
        },
    },
}

RESUME_MAY_CHANGE = training.RESUME_MAY_CHANGE

SCHEMA: dict[str, Key] = {
    "preset": preset_key(PRESETS),
    "seed": seed_key(
        "the init, the alphas' draw, the 50/50 split and the "
        "batches (search reuses the split of a pre-trained supernet)"
    ),
    "mode": Key(
        "weights: train the weights with the alphas frozen (the reference); "
        "darts1: first-order DARTS, an Adam step on the alphas (validation "
        "half) before every weight step",
        "str",
        choices=MODES,
    ),
    "compat": compat_key("normal/reduce alpha swap; null: the paper's semantics"),
    **DATA_SCHEMA,
    **SUPERNET_SCHEMA,
    # No choices: validate names the ops' own forms (training.check_impl).
    "supernet.impl": Key(IMPL_HELP, "str"),
    "supernet.stem_multiplier": Key(
        "stem output channels = stem_multiplier * C", "int", lo=1
    ),
    "supernet.alpha_std": Key(
        "alphas = alpha_std * N(0, 1), drawn once from the "
        "seed (near-uniform mixtures of the ops)",
        "float",
        lo=0,
        lo_open=True,
    ),
    **training.SCHEMA,
    "arch.lr": Key(
        "darts1: Adam learning rate of the alphas", "float", lo=0, lo_open=True
    ),
    "arch.beta1": Key(
        "darts1: Adam beta1 of the alphas", "float", lo=0, hi=1, hi_open=True
    ),
    "arch.beta2": Key(
        "darts1: Adam beta2 of the alphas", "float", lo=0, hi=1, hi_open=True
    ),
    "arch.weight_decay": Key("darts1: L2 weight decay of the alphas", "float", lo=0),
    "eval.augment": Key(
        "crop + flip the validation half when evaluating (the "
        "reference does; off by default)",
        "bool",
    ),
}


def check(config: dict) -> None:
    """Rules that tie several keys together."""
    if config["supernet"]["channels"] % 2:
        raise ConfigError(
            "supernet.channels must be an even number (reduction cells halve "
            f"it), got {config['supernet']['channels']}"
        )
    training.check_impl("supernet.impl", config["supernet"]["impl"])
