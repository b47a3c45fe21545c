"""Config groups shared by ``pretrain`` and ``train`` (the training core's settings).

Both commands train a network with the same SGD recipe and the same run loop
(:mod:`jaxdarts.training`), so their ``optim``, ``train``, ``augment`` and ``run``
groups have the same keys, rules and explanations; each command sets its defaults.
"""

from jaxdarts.config import ConfigError, Key

_POS = {"type": "int", "lo": 1}


def groups(
    *, lr: float, lr_min: float, epochs: int, batch_size: int, cutout: int
) -> dict:
    """The shared groups with one command's defaults."""
    return {
        "optim": {
            "lr": lr,
            "lr_min": lr_min,
            "momentum": 0.9,
            "weight_decay": 3e-4,
            "grad_clip": 5.0,
        },
        "train": {
            "epochs": epochs,
            "batch_size": batch_size,
            "eval_batch_size": 250,
            "steps_per_call": 64,
        },
        "augment": {"cutout": cutout, "crop_pad": None, "flip": True},
        "run": {"checkpoint_every": 1, "max_to_keep": 2},
    }


SCHEMA: dict[str, Key] = {
    "optim.lr": Key(
        "initial SGD learning rate, cosine-annealed per epoch to optim.lr_min",
        "float",
        lo=0,
        lo_open=True,
    ),
    "optim.lr_min": Key(
        "learning rate the cosine schedule reaches after the last epoch", "float", lo=0
    ),
    "optim.momentum": Key(
        "SGD momentum (PyTorch form: b = momentum * b + g)",
        "float",
        lo=0,
        hi=1,
        hi_open=True,
    ),
    "optim.weight_decay": Key(
        "weight decay added to the gradient (PyTorch SGD, every parameter)",
        "float",
        lo=0,
    ),
    "optim.grad_clip": Key(
        "global gradient norm clip applied to the raw gradient (0: off)", "float", lo=0
    ),
    "train.epochs": Key("training epochs", **_POS),
    "train.batch_size": Key("training images per step", **_POS),
    "train.eval_batch_size": Key(
        "images per evaluation batch (memory only; the metrics do not depend on it)",
        **_POS,
    ),
    "train.steps_per_call": Key(
        "training steps per compiled call (one lax.scan) between progress updates",
        **_POS,
    ),
    "augment.cutout": Key("side of the cutout square (0: off)", "int", lo=0),
    "augment.crop_pad": Key(
        "zero padding of the random crop (null: 4 for 32x32 images, scaled for others)",
        "int",
        lo=0,
        nullable=True,
    ),
    "augment.flip": Key("random horizontal flips", "bool"),
    "run.checkpoint_every": Key(
        "epochs between checkpoints (also saved at the end and on Ctrl-C)", **_POS
    ),
    "run.max_to_keep": Key("checkpoints kept (null: all)", nullable=True, **_POS),
}

#: Keys that may differ between a run and its ``--resume``.
RESUME_MAY_CHANGE = ("data.data_dir",)


def check_impl(dotted: str, impl: str) -> None:
    """Refuses an op implementation the ops do not know (``auto`` is fine)."""
    if impl == "auto":
        return
    from jaxdarts.ops import resolve_impl

    try:
        resolve_impl(impl)
    except ValueError as e:
        raise ConfigError(f"{dotted}: {e}") from None
