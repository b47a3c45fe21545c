"""Sizes shared by the commands' presets.

``quick`` is one small size for every command, so that a supernet pre-trained with
``pretrain --preset quick`` is the one ``search --preset quick`` expects, and the
README's pattern pretrain quick -> search quick -> train quick works as written.
Three cells keep one normal cell between the two reductions (cells ``L // 3`` and
``2 L // 3`` reduce), so both the normal and the reduction alphas matter.
"""

from jaxdarts.config import Key

#: The embedded default dataset (scikit-learn's 8x8 digits, shipped with the package).
QUICK_DATA = {"dataset": "digits", "data_dir": None}

#: The supernet of every ``quick`` preset (search, pretrain, score).
QUICK_SUPERNET = {"channels": 4, "layers": 3}

#: Search spaces a supernet can be built for.
SPACES = ("darts", "s1", "s2", "s3", "s4", "nas-bench-201")

#: Forms of the depthwise conv / pooling ops (``auto``: ``fused`` on CPU, ``xla``
#: elsewhere).
IMPLS = ("auto", "fused", "loop", "shift", "xla")

#: Reward kinds and NWOT flavours.
REWARDS = ("nwot", "acc", "loss")
NWOT_FLAVOURS = ("reference", "original")

#: The ``data`` keys every command shares.
DATA_SCHEMA = {
    "data.dataset": Key("digits (embedded), cifar10, a TFDS name or npz:PATH", "str"),
    "data.data_dir": Key(
        "TFDS data folder (null: TFDS's default)", "str", nullable=True
    ),
}

#: The supernet keys that search and pretrain share (what a checkpoint must match).
SUPERNET_SCHEMA = {
    "supernet.space": Key("search space", "str", choices=SPACES),
    "supernet.channels": Key("initial channels C of the supernet", "int", lo=2),
    "supernet.layers": Key("number of cells of the supernet", "int", lo=1),
}

#: How a supernet's 14 edges per cell are traced (``supernet.edges``).
EDGE_FORMS = ("auto", "scan", "unroll")

#: What ``supernet.edges`` means (search).
EDGES_HELP = (
    "edges of a cell: scan (one traced body: fast compiles) or unroll (discrete "
    "reward path only: rewards ~1.3x faster, compiles ~2.5x longer); auto: unroll for "
    "a supernet of C >= 16 and >= 8 cells scored only on the discrete path, scan "
    "otherwise"
)

#: What ``supernet.impl`` means (every command that builds a supernet).
IMPL_HELP = (
    "depthwise conv / pooling form of the ops (auto: fused on CPU, xla elsewhere)"
)


def preset_key(presets) -> Key:
    """The ``preset`` key: one of ``presets`` (names)."""
    return Key("the preset the config started from", "str", choices=tuple(presets))


def seed_key(what: str) -> Key:
    """The ``seed`` key; ``what`` says what it seeds."""
    return Key(f"seed of {what}", "int", lo=0)


def compat_key(what: str) -> Key:
    """The ``compat`` key (``dartsrl`` or null); ``what`` names the reference
    code's behaviours it turns on (and what null means)."""
    return Key(
        f"'dartsrl': the reference code's {what}",
        "str",
        choices=("dartsrl",),
        nullable=True,
    )


def checkpoint_key(untrained: str) -> Key:
    """The ``supernet.checkpoint`` key; ``untrained`` says what null gives."""
    return Key(
        f"pre-trained supernet folder (python -m jaxdarts.pretrain); null: {untrained}",
        "str",
        nullable=True,
    )
