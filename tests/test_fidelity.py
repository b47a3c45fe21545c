"""Fidelity of search and score to what a pre-trained supernet was trained on.

- the train/valid split of a search or a score with a supernet checkpoint is the
  checkpoint's ``split_seed``, and its ``--compat`` must match;
- the final rollouts of a search continue the run's env state (the ``cont-*-step``
  variants score on the weights that drifted during the run);
- ``bn_mode``: eval (running statistics) or batch statistics in the reward;
- every reward goes through the invalid-reward guard (``loss`` clipped at -100);
- score's original NWOT flavour takes the env's fixed batch of 128;
- the discrete reward path splits the envs over devices (4 forced CPU devices).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdarts import build, search


def _meta(
    ds, layers: int, split_seed: int, swap_cells: bool = False, space: str = "darts"
) -> dict:
    from jaxdarts import checkpoint as ckpt

    return {
        "format": ckpt.SUPERNET_FORMAT,
        "space": space,
        "channels": 4,
        "layers": layers,
        "num_classes": 10,
        "stem_multiplier": 3,
        "swap_cells": swap_cells,
        "eps": 1e-3,
        "compat": "dartsrl" if swap_cells else None,
        "image_shape": list(ds.image_shape),
        "dataset": "digits",
        "mean": list(ds.mean),
        "std": list(ds.std),
        "seed": split_seed,
        "split_seed": split_seed,
    }


@pytest.fixture(scope="module")
def digits():
    from jaxdarts.data import load_dataset

    return load_dataset("digits")


def _save(
    path: Path,
    ds,
    split_seed: int,
    swap_cells: bool = False,
    layers: int = 1,
    space: str = "darts",
):
    from jaxdarts import checkpoint as ckpt
    from jaxdarts.supernet import Supernet, SupernetConfig

    cfg = SupernetConfig(
        space=space, channels=4, layers=layers, num_classes=10, swap_cells=swap_cells
    )
    variables = Supernet(cfg).init(jax.random.key(3), ds.image_shape)
    meta = _meta(ds, layers, split_seed, swap_cells, space)
    ckpt.save_supernet(path / "supernet", variables, meta)
    return path, variables


@pytest.fixture(scope="module")
def ckpt0(tmp_path_factory, digits):
    """A 1-cell C=4 supernet folder whose weights were trained on split seed 0."""
    return _save(tmp_path_factory.mktemp("pre") / "pre0", digits, split_seed=0)


# ------------------------------------------------------------------ split / compat
def test_search_uses_the_checkpoint_split_seed(ckpt0, digits):
    from jaxdarts.data import split_indices

    cfg = search.make_config(
        "disc-ckpt-acc",
        "quick",
        **{"supernet.layers": 1, "supernet.checkpoint": str(ckpt0[0]), "seed": 1},
    )
    setup = build.search_setup(cfg, digits)
    n = len(digits.train_images)
    valid = np.asarray(setup.env_params.valid_images[0])
    np.testing.assert_array_equal(valid, digits.train_images[split_indices(n, 0)[1]])
    assert not np.array_equal(valid, digits.train_images[split_indices(n, 1)[1]])


def test_compat_mismatch_is_refused(tmp_path, ckpt0, digits):
    from jaxdarts import scoring
    from jaxdarts.config import load

    swapped = _save(tmp_path / "swapped", digits, split_seed=0, swap_cells=True)[0]
    cases = [(str(swapped), None), (str(ckpt0[0]), "dartsrl")]
    for path, compat in cases:
        cfg = search.make_config(
            "disc-ckpt-acc",
            "quick",
            **{"supernet.layers": 1, "supernet.checkpoint": path, "compat": compat},
        )
        with pytest.raises(ValueError, match="--compat"):
            build.search_setup(cfg, digits)
        score_cfg = load(
            "score",
            preset="quick",
            overrides={
                "supernet.checkpoint": path,
                "supernet.layers": 1,
                "compat": compat,
            },
        )
        with pytest.raises(ValueError, match="--compat"):
            scoring.prepare(["disc-nwot"], score_cfg)


# ------------------------------------------------------------------ rewards
def _tiny_net():
    from jaxdarts.supernet import Supernet, SupernetConfig

    return Supernet(SupernetConfig(channels=4, layers=1, num_classes=10))


def _batch(ds, n: int = 32):
    from jaxdarts.data import normalize

    x = normalize(jnp.asarray(ds.train_images[:n]), ds.mean, ds.std)
    return x, jnp.asarray(ds.train_labels[:n], jnp.int32)


def test_bn_mode_eval_uses_running_stats_batch_does_not(digits):
    from jaxdarts.rewards import score_one

    net = _tiny_net()
    variables = net.init(jax.random.key(0), digits.image_shape)
    wrong = {
        "params": variables["params"],
        "batch_stats": jax.tree.map(lambda a: a + 100.0, variables["batch_stats"]),
    }
    x, y = _batch(digits)
    an, ar = net.one_hot_weights(
        jnp.arange(14) % net.num_ops, (jnp.arange(14) + 3) % net.num_ops
    )
    cfgs = {
        mode: build.reward_config("loss", "dense", "reference", None, mode)
        for mode in ("eval", "batch")
    }
    assert not cfgs["eval"].bn_train and cfgs["batch"].bn_train

    @jax.jit
    def both(v):  # one compile for both modes and both variables
        return [score_one(net, v, an, ar, x, y, c)[0] for c in cfgs.values()]

    (e0, b0), (e1, b1) = both(variables), both(wrong)
    assert float(e0) != float(e1)  # eval mode reads the (wrong) running stats
    assert float(b0) == float(b1)  # batch mode does not
    # the original NWOT flavour keeps forcing batch statistics
    assert build.reward_config("nwot", "discrete", "original", None, "eval").bn_train


def test_bn_mode_reaches_the_env_and_score_configs(ckpt0, digits):
    from jaxdarts import scoring
    from jaxdarts.config import load

    for mode in ("eval", "batch"):
        cfg = search.make_config(
            "disc-acc", "quick", **{"supernet.layers": 1, "env.bn_mode": mode}
        )
        env_cfg = build.env_config(cfg, digits.image_shape, digits.num_classes)
        assert env_cfg.reward.bn_train == (mode == "batch")
        score_cfg = load(
            "score",
            preset="quick",
            overrides={"reward.kind": "acc", "reward.bn_mode": mode},
        )
        assert scoring.prepare(["disc-nwot"], score_cfg).reward.bn_train == (
            mode == "batch"
        )


def test_score_one_clips_the_loss_reward(digits):
    from jaxdarts.rewards import LOSS_REWARD_FLOOR, RewardConfig, score_one

    net = _tiny_net()
    variables = net.init(jax.random.key(0), digits.image_shape)
    # huge logits (the head scaled): a mean cross-entropy far above 100
    head = jax.tree.map(lambda a: a * 1e6, variables["params"]["head"])
    huge = {
        "params": {**variables["params"], "head": head},
        "batch_stats": variables["batch_stats"],
    }
    x, y = _batch(digits)
    an = jnp.full((14,), 3)
    cfg = RewardConfig(kind="loss", path="dense")
    weights = net.one_hot_weights(an, an)
    score = jax.jit(lambda v: score_one(net, v, *weights, x, y, cfg))
    r, ok = score(huge)
    assert bool(ok) and float(r) == LOSS_REWARD_FLOOR
    r, ok = score(variables)  # an ordinary loss is left as it is
    assert bool(ok) and LOSS_REWARD_FLOOR < float(r) < 0


def test_score_original_flavour_takes_the_env_batch(ckpt0, digits):
    from jaxdarts import scoring
    from jaxdarts.config import ConfigError, load
    from jaxdarts.data import split_indices
    from jaxdarts.env import nwot_original_batch

    cfg = load(
        "score",
        preset="quick",
        overrides={
            "supernet.checkpoint": str(ckpt0[0]),
            "supernet.layers": 1,
            "reward.nwot_flavour": "original",
        },
    )
    setup = scoring.prepare(["disc-nwot"], cfg)
    pool = split_indices(len(digits.train_labels), 0)[1]
    want = nwot_original_batch(
        digits.train_images[pool], digits.train_labels[pool], setup.mean, setup.std
    )
    for s in (0, 1):  # the same batch for every seed, as in the env
        got = scoring._seed_batch(setup, s)
        np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
        np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))
    with pytest.raises(ConfigError, match="batch_size"):
        load(
            "score",
            preset="quick",
            overrides={"reward.nwot_flavour": "original", "reward.batch_size": 64},
        )


# ------------------------------------------------------------------ final rollout
@pytest.mark.slow  # compiles the PPO init and a weight-step rollout
def test_final_rollout_uses_the_drifted_weights(tmp_path, digits):
    """A 1-cell C=4 cont-loss-step search: its final reward is computed on the
    supernet weights of the run's final env state, not on the initial ones.
    Search space s2 (2 ops per edge): a small program, a quick compile.

    The weight step's drift is stood in for by other weights in the env state (no
    PPO chunk to compile); with ``weight_step_period=2`` and one sweep the rollout's
    own episode takes no weight step, so its reward is computable by hand.
    """
    from jaxdarts import env as env_lib
    from jaxdarts import searching
    from jaxdarts.data import normalize
    from jaxdarts.ppo import evaluate_policy
    from jaxdarts.rewards import RewardConfig, score_one

    pre = _save(tmp_path / "pre", digits, split_seed=0, space="s2")[0]
    cfg = search.make_config(
        "cont-loss-step",
        "quick",
        **{
            "supernet.space": "s2",
            "supernet.layers": 1,
            "supernet.checkpoint": str(pre),
            "env.num_envs": 2,
            "env.batch_size": 16,
            "env.sweeps": 1,
            "env.frame_stack": 2,
            "env.weight_step_period": 2,
            "env.augment_valid": False,
            "ppo.transitions_per_update": 56,
        },
    )
    setup = build.search_setup(cfg, digits)
    net = setup.env.supernet
    init_jit, _ = searching.make_programs(setup, 2)
    state = init_jit(jnp.stack([jax.random.key(cfg["seed"])]), setup.env_params)
    other = net.init(jax.random.key(11), digits.image_shape)
    drifted = state.replace(
        env_state=state.env_state.replace(
            variables=jax.tree.map(
                lambda a, o: jnp.broadcast_to(o, a.shape).astype(a.dtype),
                state.env_state.variables,
                other,
            )
        )
    )
    run = searching.SearchRun(cfg, setup, None, 1, 1)
    on_drifted = searching.final_architectures(run, drifted, setup.env_params)
    on_initial = searching.final_architectures(run, state, setup.env_params)
    # compiled ahead (as a search does, alongside its first chunk): the same results
    run.final_program = searching.final_rollout_program(run, drifted, setup.env_params)
    assert searching.final_architectures(run, drifted, setup.env_params) == on_drifted
    run.final_program = None
    r_drifted = on_drifted[0]["deterministic"][1]
    assert r_drifted != on_initial[0]["deterministic"][1]

    # by hand: the deterministic rollout's final alphas, scored with the final env
    # state's weights on that env's next (un-augmented) validation batch
    final = searching.final_env_state(drifted, 0)
    params = jax.tree.map(lambda x: x[0], drifted.params)
    env_params = jax.tree.map(lambda x: x[0], setup.env_params)
    roll = jax.jit(evaluate_policy, static_argnums=(1, 4))(
        params,
        env_lib.LockstepEnv(setup.env, 1),
        env_params,
        jax.random.key(cfg["seed"] + 1000),
        setup.env.episode_length,
        jnp.asarray(True),
        final,
    )
    assert float(roll.info["raw_reward"][-1, 0]) == r_drifted
    alphas = roll.info["final_alphas"][-1, 0]
    b = setup.env.batch_size
    pos = int(final.valid_pos[0]) % (len(env_params.valid_images) // b)
    x = normalize(
        env_params.valid_images[pos * b : (pos + 1) * b], digits.mean, digits.std
    )
    y = env_params.valid_labels[pos * b : (pos + 1) * b]
    weights = net.edge_weights(alphas[0], alphas[1])
    hand, ok = jax.jit(score_one, static_argnums=(0, 6))(
        net, other, *weights, x, y, RewardConfig(kind="loss", path="dense")
    )
    assert bool(ok)
    np.testing.assert_allclose(float(hand), r_drifted, rtol=1e-5)


# ------------------------------------------------------------------ sharded discrete
_SHARDED = r"""
import json, sys
import jax
from jaxdarts import search
assert jax.device_count() == 4, jax.devices()
out = sys.argv[1]
base = ["--preset", "quick", "--set", "supernet.layers=1", "--num-envs", "4",
        "--set", "env.batch_size=16", "--set", "env.sweeps=1", "--set", "ppo.transitions_per_update=128",
        "--total-steps", "128"]
for n in (1, 4):
    assert search.main(base + ["--devices", str(n), "--out", f"{out}/d{n}"]) == 0
"""
