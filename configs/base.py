"""Every default of a search run (the paper's setting, decisions.md)."""


def get_config() -> dict:
    return {
        "variant": "disc-nwot",
        "preset": "paper",
        "seed": 0,
        "seeds": 1,
        "compat": None,  # "dartsrl": the reference's normal/reduce swap + step every sweep
        "data": {"dataset": "cifar10", "data_dir": None},
        "supernet": {
            "space": "darts",
            "channels": 16,
            "layers": 8,
            "impl": "auto",
            "checkpoint": None,  # pre-trained supernet folder (ckpt and cont variants)
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
            "invalid_reward": None,  # None: the reward kind's default
            "reward_norm": False,  # not in the reference; the quick preset uses it
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
            "checkpoint_every": 5,  # chunks
            "top_k": 10,
        },
    }
