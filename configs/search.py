"""Config of ``python -m jaxdarts.search``: base, the paper's nine variants, presets.

A run's config = ``get_config()`` + ``VARIANTS[variant]`` + ``PRESETS[preset]`` +
flags and ``--set KEY=VALUE`` (see :mod:`jaxdarts.config`). ``paper`` is the paper's
setting (its values where the paper states one, the reference code's elsewhere);
``quick`` is a small supernet on the embedded digits data: minutes on a 2-core CPU.
"""

from jaxdarts.configs.common import (
    DATA_SCHEMA,
    EDGE_FORMS,
    EDGES_HELP,
    IMPL_HELP,
    IMPLS,
    NWOT_FLAVOURS,
    QUICK_DATA,
    QUICK_SUPERNET,
    REWARDS,
    SUPERNET_SCHEMA,
    checkpoint_key,
    compat_key,
    preset_key,
    seed_key,
)

from jaxdarts.config import ConfigError, Key


def get_config() -> dict:
    """Every default of a search run (the paper's setting)."""
    return {
        "variant": "disc-nwot",
        "preset": "paper",
        "agent": "ppo",
        "seed": 0,
        "seeds": 1,
        "compat": None,
        "data": {"dataset": "cifar10", "data_dir": None},
        "supernet": {
            "space": "darts",
            "channels": 16,
            "layers": 8,
            "impl": "auto",
            "edges": "auto",
            "checkpoint": None,
        },
        "env": {
            "kind": "discrete",
            "reward": "nwot",
            "num_envs": 1,
            "batch_size": 64,
            "sentinel": 1e6,
            "alpha_std": 1e-3,
            "lam": 0.01,
            "sweeps": 10,
            "frame_stack": 10,
            "grad_obs": False,
            "weight_step": False,
            "weight_step_period": 5,
            "augment_valid": True,
            "reward_path": "discrete",
            "nwot_flavour": "reference",
            "bn_mode": "eval",
            "invalid_reward": None,
            "reward_norm": False,
        },
        "ppo": {
            "learning_rate": 3e-4,
            "transitions_per_update": 2048,
            "batch_size": 64,
            "n_epochs": 10,
            "gamma": 0.99,
            "gae_lambda": 0.95,
            "clip_range": 0.2,
            "ent_coef": 0.0,
            "vf_coef": 0.5,
            "max_grad_norm": 0.5,
        },
        "run": {
            "total_steps": 1_000_000,
            "updates_per_chunk": 1,
            "checkpoint_every": 5,
            "top_k": 10,
        },
    }


def _cont(reward: str, grad_obs: bool) -> dict:
    env = {"kind": "continuous", "reward": reward, "weight_step": True}
    if grad_obs:
        env["grad_obs"] = True
    return {"env": env, "run": {"total_steps": 250_000}}


#: The paper's nine variants on the DARTS space (add ``--space s2|s3|s4`` for the
#: robustness runs). ``ckpt`` and ``cont`` variants need ``supernet.checkpoint``.
VARIANTS: dict[str, dict] = {
    "disc-nwot": {"env": {"reward": "nwot"}},
    "disc-acc": {"env": {"reward": "acc"}},
    "disc-loss": {"env": {"reward": "loss"}},
    "disc-ckpt-acc": {"env": {"reward": "acc"}},
    "disc-ckpt-loss": {"env": {"reward": "loss"}},
    "cont-acc-step": _cont("acc", grad_obs=False),
    "cont-loss-step": _cont("loss", grad_obs=False),
    "cont-acc-grad-step": _cont("acc", grad_obs=True),
    "cont-loss-grad-step": _cont("loss", grad_obs=True),
}

#: Variants that score with a pre-trained supernet (``--supernet-ckpt``).
NEEDS_CHECKPOINT = tuple(v for v in VARIANTS if "ckpt" in v or v.startswith("cont"))

PRESETS: dict[str, dict] = {
    "paper": {},
    "quick": {
        "data": dict(QUICK_DATA),
        "supernet": dict(QUICK_SUPERNET),
        "env": {
            "batch_size": 32,
            "num_envs": 8,
            "sweeps": 2,
            "frame_stack": 4,
            "reward_norm": True,
        },
        "ppo": {"transitions_per_update": 256, "learning_rate": 3e-3},
        "run": {"total_steps": 256 * 16, "updates_per_chunk": 4, "checkpoint_every": 1},
    },
}

#: BatchNorm modes of the reward forward.
BN_MODES = ("eval", "batch")

#: Keys that may differ between a run and its ``--resume`` (``run.total_steps`` may
#: grow: resuming with a larger value extends a finished search).
RESUME_MAY_CHANGE = ("data.data_dir", "run.total_steps")

#: Values of keys added after runs were saved without them: what those runs used.
SAVED_DEFAULTS = {"supernet.edges": "scan"}

_POS = {"type": "int", "lo": 1}

SCHEMA: dict[str, Key] = {
    "variant": Key(
        "the paper's variant (env kind, reward, weight step)",
        "str",
        choices=tuple(VARIANTS),
    ),
    "preset": preset_key(PRESETS),
    "agent": Key(
        "ppo: the paper's PPO agent; random: random search (uniform actions, no "
        "learning; same env, reward, steps and outputs; its genotype is the best "
        "architecture seen)",
        "str",
        choices=("ppo", "random"),
    ),
    "seed": seed_key("the supernet init, split, envs and agent"),
    "seeds": Key("independent searches run together in one compiled program", **_POS),
    "compat": compat_key(
        "normal/reduce alpha swap and a weight step every sweep; null: the paper's "
        "semantics"
    ),
    **DATA_SCHEMA,
    **SUPERNET_SCHEMA,
    "supernet.impl": Key(IMPL_HELP, "str", choices=IMPLS),
    "supernet.edges": Key(EDGES_HELP, "str", choices=EDGE_FORMS),
    "supernet.checkpoint": checkpoint_key("untrained supernet"),
    "env.kind": Key(
        "discrete: an action assigns one op to the next edge; "
        "continuous: an action nudges one edge's alphas",
        "str",
        choices=("discrete", "continuous"),
    ),
    "env.reward": Key(
        "episode-end reward on a validation batch", "str", choices=REWARDS
    ),
    "env.num_envs": Key("environments run in lockstep", **_POS),
    "env.batch_size": Key("validation images per reward", "int", lo=1, hi=4096),
    "env.sentinel": Key(
        "logit a discrete action writes for the chosen op (the "
        "others stay near 0, so softmax is one-hot)",
        "float",
        lo=0,
        lo_open=True,
    ),
    "env.alpha_std": Key(
        "alphas are drawn as alpha_std * N(0, 1) at every reset", "float", lo=0
    ),
    "env.lam": Key(
        "lambda: a continuous action changes an alpha by lam * a",
        "float",
        lo=0,
        lo_open=True,
    ),
    "env.sweeps": Key("continuous episodes: sweeps over the 28 edges", **_POS),
    "env.frame_stack": Key("continuous observations: frames stacked", **_POS),
    "env.grad_obs": Key(
        "continuous: add the alphas' validation-loss gradient to the observation",
        "bool",
    ),
    "env.weight_step": Key(
        "continuous: SGD step on the supernet weights every weight_step_period sweeps",
        "bool",
    ),
    "env.weight_step_period": Key("sweeps between weight steps", **_POS),
    "env.augment_valid": Key(
        "crop + flip the validation batch (as the reference)", "bool"
    ),
    "env.reward_path": Key(
        "discrete: run only the chosen op per edge; dense: every "
        "op, weighted (vmaps over architectures)",
        "str",
        choices=("discrete", "dense"),
    ),
    "env.nwot_flavour": Key(
        "reference: eval-mode BN on a fresh batch per reward; "
        "original: Mellor et al. (train-mode BN, one fixed "
        "un-augmented batch of 128)",
        "str",
        choices=NWOT_FLAVOURS,
    ),
    "env.bn_mode": Key(
        "BatchNorm of the reward forward: eval (running statistics, as the "
        "reference) or batch (statistics of the reward batch; a one-op-per-edge "
        "architecture on a supernet pre-trained as a mixture mostly needs it to "
        "score above chance). nwot_flavour=original always uses batch statistics",
        "str",
        choices=BN_MODES,
    ),
    "env.invalid_reward": Key(
        "reward of an architecture whose score is not finite "
        "(null: the reward kind's default, below every valid "
        "reward)",
        "float",
        nullable=True,
    ),
    "env.reward_norm": Key(
        "normalise the episode reward per env (running std, "
        "clipped to +-10; not in the paper)",
        "bool",
    ),
    "ppo.learning_rate": Key(
        "Adam learning rate (constant)", "float", lo=0, lo_open=True, hi=1
    ),
    "ppo.transitions_per_update": Key(
        "env steps per PPO update, all envs together (the paper: 2048)", **_POS
    ),
    "ppo.batch_size": Key("PPO minibatch size", **_POS),
    "ppo.n_epochs": Key("PPO epochs per update", **_POS),
    "ppo.gamma": Key("discount factor", "float", lo=0, hi=1),
    "ppo.gae_lambda": Key("GAE lambda", "float", lo=0, hi=1),
    "ppo.clip_range": Key("PPO ratio clip", "float", lo=0, lo_open=True),
    "ppo.ent_coef": Key("entropy bonus coefficient", "float", lo=0),
    "ppo.vf_coef": Key("value-loss coefficient", "float", lo=0),
    "ppo.max_grad_norm": Key("global-norm gradient clip", "float", lo=0, lo_open=True),
    "run.total_steps": Key("env steps of the whole search (per seed)", **_POS),
    "run.updates_per_chunk": Key("PPO updates per compiled call between logs", **_POS),
    "run.checkpoint_every": Key("chunks between checkpoints", **_POS),
    "run.top_k": Key("best architectures kept in top_architectures.json", **_POS),
}


def check(config: dict) -> None:
    """Rules that tie several keys together."""
    env = config["env"]
    if config["variant"] in NEEDS_CHECKPOINT and not config["supernet"]["checkpoint"]:
        raise ConfigError(
            f"variant {config['variant']!r} needs a pre-trained supernet: pass "
            "--supernet-ckpt DIR (make one with python -m jaxdarts.pretrain, e.g. "
            "--preset quick for the quick size)"
        )
    if env["kind"] == "continuous" and env["reward"] == "nwot":
        raise ConfigError(
            "the continuous env cannot use the nwot reward (as in the reference): "
            "set env.reward to acc or loss"
        )
    if env["kind"] == "discrete" and (env["grad_obs"] or env["weight_step"]):
        raise ConfigError(
            "env.grad_obs and env.weight_step are for the continuous env only"
        )
    if config["supernet"]["channels"] % 2:
        raise ConfigError(
            "supernet.channels must be an even number >= 2, got "
            f"{config['supernet']['channels']}"
        )
    if env["reward"] == "nwot" and env["batch_size"] < 2:
        raise ConfigError(
            "env.batch_size must be >= 2 for the nwot reward (the kernel of one "
            f"image says nothing), got {env['batch_size']}"
        )
    if env["nwot_flavour"] == "original" and env["reward"] != "nwot":
        raise ConfigError("env.nwot_flavour=original applies to the nwot reward only")
    from jaxdarts.build import discrete_only

    if config["supernet"]["edges"] == "unroll" and not discrete_only(env):
        raise ConfigError(
            "supernet.edges=unroll is for the discrete reward path only (env.kind="
            "discrete, env.reward_path=discrete): the dense path unrolled compiles "
            "for minutes and its training step runs ~7x slower. Set "
            "supernet.edges=auto or scan",
            "supernet.edges",
        )
