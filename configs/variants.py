"""The paper's nine variants and the presets, as overrides of ``base.get_config()``.

Variant -> reference flags (reference.md §1.3); the paper's step counts (decisions.md).
"""

_CONT = {"env": {"kind": "continuous"}, "run": {"total_steps": 250_000}}

VARIANTS: dict[str, dict] = {
    "disc-nwot": {"env": {"reward": "nwot"}},
    "disc-acc": {"env": {"reward": "acc"}},
    "disc-loss": {"env": {"reward": "loss"}},
    "disc-ckpt-acc": {"env": {"reward": "acc"}, "needs_checkpoint": True},
    "disc-ckpt-loss": {"env": {"reward": "loss"}, "needs_checkpoint": True},
    "cont-acc-step": {
        **_CONT,
        "env": {"kind": "continuous", "reward": "acc", "weight_step": True},
        "needs_checkpoint": True,
    },
    "cont-loss-step": {
        **_CONT,
        "env": {"kind": "continuous", "reward": "loss", "weight_step": True},
        "needs_checkpoint": True,
    },
    "cont-acc-grad-step": {
        **_CONT,
        "env": {
            "kind": "continuous",
            "reward": "acc",
            "weight_step": True,
            "grad_obs": True,
        },
        "needs_checkpoint": True,
    },
    "cont-loss-grad-step": {
        **_CONT,
        "env": {
            "kind": "continuous",
            "reward": "loss",
            "weight_step": True,
            "grad_obs": True,
        },
        "needs_checkpoint": True,
    },
}

PRESETS: dict[str, dict] = {
    "paper": {},
    # A small supernet on the embedded digits data: minutes on a 2-core CPU.
    "quick": {
        "data": {"dataset": "digits"},
        "supernet": {"channels": 4, "layers": 2},
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
