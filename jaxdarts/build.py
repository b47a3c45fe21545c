"""Config -> typed pieces, in one place: what ``search``, ``score`` and the
benchmarks build from a validated config (:func:`jaxdarts.config.load`).

- :func:`load_data`: the dataset a config names (a short "how to prepare it" error if
  it is not there), before any run folder exists;
- :func:`supernet_config`, :func:`reward_config`, :func:`env_config`,
  :func:`ppo_config`: the frozen dataclasses the library functions take, with the
  dataset's class count and crop padding filled in at construction;
- :func:`pretrained_supernet`: a pre-trained supernet checked against the config;
- :func:`search_setup`: everything a search needs, the env params of every seed
  stacked on a leading axis.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from typing import Any

__all__ = [
    "SearchSetup",
    "load_data",
    "load_supernet",
    "supernet_config_from_meta",
    "supernet_config",
    "reward_config",
    "env_config",
    "ppo_config",
    "pretrained_supernet",
    "check_compat",
    "split_seed_of",
    "search_setup",
    "check_batch_size",
]

from jaxdarts.checkpoint import load_supernet, supernet_config_from_meta

log = logging.getLogger("jaxdarts")


def load_data(data: Mapping[str, Any]):
    """The dataset of a config's ``data`` group.

    Raises:
      jaxdarts.data.DataNotFoundError: a TFDS dataset that is not prepared (the
        message says how to prepare it).
      ValueError, FileNotFoundError: an unknown name or a missing ``.npz`` file.
    """
    from jaxdarts.data import load_dataset

    return load_dataset(data["dataset"], data.get("data_dir"))


def supernet_config(
    supernet: Mapping[str, Any],
    num_classes: int,
    compat: str | None = None,
    edges: str = "auto",
):
    """The :class:`~jaxdarts.supernet.SupernetConfig` of a config's ``supernet``."""
    from jaxdarts.supernet import SupernetConfig

    return SupernetConfig(
        space=supernet["space"],
        channels=supernet["channels"],
        layers=supernet["layers"],
        num_classes=num_classes,
        impl=supernet["impl"],
        swap_cells=compat == "dartsrl",
        edges=edges,
    )


def edge_form(cfg: Mapping[str, Any]) -> str:
    """``scan`` or ``unroll``: how a search config's supernet traces its edges.

    ``supernet.edges="auto"`` unrolls a paper-size supernet (C >= 16, >= 8 cells)
    that only the discrete path runs (discrete env and discrete reward path): its
    rewards are ~1.3x faster, which repays the ~25 s longer compile within the
    first few hundred rewards of a long search. Smaller supernets, and the dense
    path (whose unrolled training step compiles for minutes), scan.
    """
    s, e = cfg["supernet"], cfg["env"]
    form = s.get("edges", "auto")
    if form != "auto":
        return form
    paper_size = s["channels"] >= 16 and s["layers"] >= 8
    return "unroll" if paper_size and discrete_only(e) else "scan"


def discrete_only(env: Mapping[str, Any]) -> bool:
    """Whether a search's ``env`` config runs only the supernet's discrete path
    (a discrete env scored on the discrete reward path: no dense forward pass)."""
    return env["kind"] == "discrete" and env["reward_path"] == "discrete"


def reward_config(
    kind: str,
    path: str,
    nwot_flavour: str,
    invalid: float | None,
    bn_mode: str = "eval",
):
    """A :class:`~jaxdarts.rewards.RewardConfig`; ``invalid=None``: its default.

    BatchNorm uses batch statistics (``bn_train``) with ``bn_mode="batch"`` for any
    reward kind, and always for the original NWOT flavour; running statistics
    (``bn_mode="eval"``, the reference) otherwise.
    """
    from jaxdarts.rewards import RewardConfig

    if bn_mode not in ("eval", "batch"):
        raise ValueError(f"bn_mode must be 'eval' or 'batch', got {bn_mode!r}")
    extra = {} if invalid is None else {"invalid_reward": invalid}
    original = kind == "nwot" and nwot_flavour == "original"
    return RewardConfig(
        kind=kind,
        path=path,
        bn_train=original or bn_mode == "batch",
        **extra,
    )


#: The ``env`` keys of a search config that are EnvConfig fields of the same name.
_ENV_FIELDS = (
    "batch_size",
    "sentinel",
    "alpha_std",
    "lam",
    "sweeps",
    "frame_stack",
    "grad_obs",
    "weight_step",
    "augment_valid",
    "reward_norm",
    "nwot_flavour",
)
#: The ``ppo`` keys of a search config that are PPOConfig fields of the same name.
_PPO_FIELDS = (
    "learning_rate",
    "batch_size",
    "n_epochs",
    "gamma",
    "gae_lambda",
    "clip_range",
    "ent_coef",
    "vf_coef",
    "max_grad_norm",
)


def _pick(section: Mapping[str, Any], *names: str) -> dict[str, Any]:
    """``{name: section[name]}`` for ``names`` (a config section's fields)."""
    return {name: section[name] for name in names}


def env_config(cfg: Mapping[str, Any], image_shape, num_classes: int):
    """The :class:`~jaxdarts.env.EnvConfig` of a search config on a dataset."""
    from jaxdarts.data import default_crop_pad
    from jaxdarts.env import EnvConfig

    e = cfg["env"]
    dartsrl = cfg["compat"] == "dartsrl"
    return EnvConfig(
        kind=e["kind"],
        net=supernet_config(
            cfg["supernet"], num_classes, cfg["compat"], edge_form(cfg)
        ),
        reward=reward_config(
            e["reward"],
            e["reward_path"],
            e["nwot_flavour"],
            e["invalid_reward"],
            e.get("bn_mode", "eval"),
        ),
        weight_step_period=1 if dartsrl else e["weight_step_period"],
        crop_pad=default_crop_pad(image_shape[0]),
        **_pick(e, *_ENV_FIELDS),
    )


def ppo_config(ppo: Mapping[str, Any], num_envs: int):
    """The :class:`~jaxdarts.ppo.PPOConfig`; ``n_steps`` keeps the transitions per
    update (``ceil(transitions_per_update / num_envs)`` per env)."""
    from jaxdarts.ppo import PPOConfig

    return PPOConfig(
        n_steps=math.ceil(ppo["transitions_per_update"] / num_envs),
        **_pick(ppo, *_PPO_FIELDS),
    )


def check_compat(meta: Mapping[str, Any], swap_cells: bool, path: str) -> None:
    """Refuses a supernet pre-trained with another ``--compat`` than the run's.

    ``compat=dartsrl`` swaps the alphas that drive normal and reduction cells, so
    weights trained one way score architectures wrongly the other way.

    Raises:
      ValueError: naming ``--compat`` and what to pass.
    """
    saved = bool(meta["swap_cells"])
    if saved == bool(swap_cells):
        return
    if saved:
        raise ValueError(
            f"the supernet in {path} was pre-trained with --compat dartsrl (the "
            "reference's normal/reduce cell swap), but this run is without it: pass "
            "--compat dartsrl, or pre-train a supernet without --compat"
        )
    raise ValueError(
        f"the supernet in {path} was pre-trained without --compat, but this run asks "
        "for --compat dartsrl: drop --compat, or pre-train a supernet with "
        "--compat dartsrl"
    )


def split_seed_of(meta: Mapping[str, Any] | None, seed: int) -> int:
    """The seed of the train/valid split: a pre-trained supernet's ``split_seed``
    (so that rewards never score on images its weights were trained on), else
    ``seed``."""
    if meta is None:
        return seed
    return int(meta.get("split_seed", meta.get("seed", seed)))


def pretrained_supernet(path: str, net, image_shape) -> tuple[Any, dict[str, Any]]:
    """Loads the supernet in ``path``; refuses one of another ``--compat``, space,
    size or image shape (every difference listed).

    Returns:
      ``(variables, meta)``.
    """
    expect = {
        "space": net.space,
        "channels": net.channels,
        "layers": net.layers,
        "num_classes": net.num_classes,
        "image_shape": list(image_shape),
    }
    variables, meta = load_supernet(path, expect=expect)
    check_compat(meta, net.swap_cells, path)
    return variables, meta


@dataclasses.dataclass(frozen=True)
class SearchSetup:
    """What a search run is built from.

    Attributes:
      env: the static env config (dataset's classes and crop padding filled in).
      ppo: the PPO config.
      num_envs: lockstep envs per seed.
      seeds: independent searches.
      dataset: the loaded :class:`~jaxdarts.data.ImageDataset`.
      env_params: :class:`~jaxdarts.env.EnvParams` of every seed, stacked on a
        leading axis ``[seeds, ...]``.
    """

    env: Any
    ppo: Any
    num_envs: int
    seeds: int
    dataset: Any
    env_params: Any

    @property
    def steps_per_update(self) -> int:
        """Env steps of one PPO update (all envs of one seed)."""
        return self.ppo.n_steps * self.num_envs


def check_batch_size(batch_size: int, valid: int, dataset: str) -> None:
    """A reward batch must fit in the validation half of the train split."""
    if batch_size > valid:
        raise ValueError(
            f"env.batch_size {batch_size} is larger than the validation half of "
            f"{dataset} ({valid} images): use --set env.batch_size={valid} or less"
        )


def _seed_variables(
    cfg: Mapping[str, Any], env_cfg, image_shape, pretrained=None
) -> list[Any]:
    """The supernet variables of every seed: the pre-trained ones (``pretrained``,
    else loaded), or seed ``i``'s init from ``fold_in(key(seed + i), 7)``."""
    import jax

    seeds = cfg["seeds"]
    ckpt = cfg["supernet"]["checkpoint"]
    if ckpt:
        if pretrained is None:
            pretrained = pretrained_supernet(ckpt, env_cfg.net, image_shape)
        return [pretrained[0]] * seeds
    net = env_cfg.supernet
    return [
        net.init(jax.random.fold_in(jax.random.key(cfg["seed"] + i), 7), image_shape)
        for i in range(seeds)
    ]


def _pretrained_and_split(cfg: Mapping[str, Any], env_cfg, image_shape):
    """``((variables, meta) or None, split seed)``: the checked pre-trained
    supernet of ``supernet.checkpoint``, and its ``split_seed`` (else ``seed``)."""
    pretrained, meta = None, None
    if cfg["supernet"]["checkpoint"]:
        pretrained = pretrained_supernet(
            cfg["supernet"]["checkpoint"], env_cfg.net, image_shape
        )
        meta = pretrained[1]
    split_seed = split_seed_of(meta, cfg["seed"])
    if split_seed != cfg["seed"]:
        log.info(
            "train/valid split drawn with the supernet checkpoint's split_seed %d "
            "(not --seed %d), so that rewards never use images it was trained on",
            split_seed,
            cfg["seed"],
        )
    return pretrained, split_seed


def search_setup(cfg: Mapping[str, Any], dataset=None) -> SearchSetup:
    """Builds a search from its validated config (``configs/search.py``).

    Args:
      cfg: the config of :func:`jaxdarts.config.load` (``"search"``).
      dataset: the loaded dataset (None: :func:`load_data` of ``cfg["data"]``).

    Raises:
      ValueError, FileNotFoundError: a checkpoint that does not fit, or a
        validation half smaller than a reward batch.
      jaxdarts.data.DataNotFoundError: the dataset is not prepared.
    """
    import jax
    import jax.numpy as jnp

    from jaxdarts import data as data_lib
    from jaxdarts import env as env_lib

    ds = load_data(cfg["data"]) if dataset is None else dataset
    env_cfg = env_config(cfg, ds.image_shape, ds.num_classes)
    num_envs = cfg["env"]["num_envs"]
    ppo = ppo_config(cfg["ppo"], num_envs)
    pretrained, split_seed = _pretrained_and_split(cfg, env_cfg, ds.image_shape)
    tr, va = data_lib.split_indices(len(ds.train_images), split_seed)
    check_batch_size(env_cfg.batch_size, len(va), cfg["data"]["dataset"])
    train = (ds.train_images[tr], ds.train_labels[tr])
    if not env_cfg.weight_step:
        train = (None, None)
    params = [
        env_lib.make_params(
            env_cfg,
            v,
            ds.train_images[va],
            ds.train_labels[va],
            ds.mean,
            ds.std,
            *train,
        )
        for v in _seed_variables(cfg, env_cfg, ds.image_shape, pretrained)
    ]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *params)
    return SearchSetup(env_cfg, ppo, num_envs, cfg["seeds"], ds, stacked)
