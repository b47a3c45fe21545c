"""Config of ``python -m jaxdarts.train``: base and presets.

A run's config = ``get_config()`` + ``PRESETS[preset]`` + flags and ``--set
KEY=VALUE`` (see :mod:`jaxdarts.config`). ``paper``: CIFAR-10, the full train split
with crop + flip + cutout 16, 600 epochs, batch 96, 20 cells of 36 channels, SGD
(momentum 0.9, weight decay 3e-4, gradient norm clip 5), learning rate 0.025
cosine-annealed to 0. ``quick``: the embedded digits data, 3 cells of 8 channels,
10 epochs; about a minute on a 2-core CPU.
"""

from jaxdarts.configs import training
from jaxdarts.configs.common import DATA_SCHEMA, QUICK_DATA, preset_key, seed_key

from jaxdarts.config import ConfigError, Key


def get_config() -> dict:
    """Every default of a training run (the paper's setting)."""
    return {
        "preset": "paper",
        "seed": 0,
        "genotype": None,
        "genotype_source": None,
        "data": {"dataset": "cifar10", "data_dir": None},
        "net": {
            "channels": 36,
            "layers": 20,
            "auxiliary": False,
            "auxiliary_weight": 0.4,
            "drop_path": 0.0,
            "identity_dropout": 0.2,
            "impl": "auto",
            "bf16": False,
            "init": "host",
        },
        **training.groups(lr=0.025, lr_min=0.0, epochs=600, batch_size=96, cutout=16),
    }


PRESETS: dict[str, dict] = {
    "paper": {},
    "quick": {
        "data": dict(QUICK_DATA),
        "net": {"channels": 8, "layers": 3},
        "optim": {"lr": 0.05},
        "train": {
            "epochs": 10,
            "batch_size": 32,
            "eval_batch_size": 360,
            "steps_per_call": 45,
        },
        "augment": {"cutout": 0, "flip": False},  # digits are not mirror-symmetric
    },
}

RESUME_MAY_CHANGE = (*training.RESUME_MAY_CHANGE, "genotype_source")

SCHEMA: dict[str, Key] = {
    "preset": preset_key(PRESETS),
    "seed": seed_key("the init, the batches, augmentation and dropout"),
    "genotype": Key(
        "the genotype trained ({normal, normal_concat, reduce, "
        "reduce_concat}); set with --genotype",
        "dict",
        nullable=True,
    ),
    "genotype_source": Key(
        "what --genotype said (a name, a file or a string)", "str", nullable=True
    ),
    **DATA_SCHEMA,
    "net.channels": Key("initial channels C of the evaluation network", "int", lo=1),
    "net.layers": Key("number of cells L (cells L//3 and 2L//3 reduce)", "int", lo=1),
    "net.auxiliary": Key("DARTS auxiliary head after cell 2L//3", "bool"),
    "net.auxiliary_weight": Key("weight of the auxiliary head's loss", "float", lo=0),
    "net.drop_path": Key(
        "DARTS drop-path probability, ramped linearly from 0 over "
        "the epochs (DARTS: 0.2)",
        "float",
        lo=0,
        hi=1,
        hi_open=True,
    ),
    "net.identity_dropout": Key(
        "dropout after skip connections (the reference's)",
        "float",
        lo=0,
        hi=1,
        hi_open=True,
    ),
    "net.impl": Key(
        "depthwise conv / pooling form of the ops (auto: fastest for the backend)",
        "str",
    ),
    "net.bf16": Key("compute in bfloat16 (parameters stay float32)", "bool"),
    "net.init": Key(
        "host: PyTorch's default init drawn with NumPy (no compile); "
        "flax: the modules' initialisers under jit",
        "str",
        choices=("host", "flax"),
    ),
    **training.SCHEMA,
}


def check(config: dict) -> None:
    """Rules that tie several keys together."""
    if config["genotype"] is None:
        raise ConfigError(
            "a genotype is needed: --genotype NAME|FILE.json|'Genotype(...)'"
        )
    from jaxdarts.genotypes import from_json_dict

    try:
        from_json_dict(config["genotype"])
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"genotype: {e}") from None
    training.check_impl("net.impl", config["net"]["impl"])
