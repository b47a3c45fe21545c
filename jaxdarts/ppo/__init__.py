"""PPO with stable-baselines3 semantics, as pure JAX functions."""

from jaxdarts.ppo.losses import PPOBatch, compute_gae, ppo_loss
from jaxdarts.ppo.networks import act, init_agent, policy_and_value
from jaxdarts.ppo.train import (
    EvalRollout,
    PPOConfig,
    TrainState,
    VecEnv,
    config_for_num_envs,
    evaluate_policy,
    make_train,
    make_train_seeds,
    steps_per_env,
)

__all__ = [
    "EvalRollout",
    "PPOBatch",
    "PPOConfig",
    "TrainState",
    "VecEnv",
    "act",
    "compute_gae",
    "config_for_num_envs",
    "evaluate_policy",
    "init_agent",
    "make_train",
    "make_train_seeds",
    "policy_and_value",
    "ppo_loss",
    "steps_per_env",
]
