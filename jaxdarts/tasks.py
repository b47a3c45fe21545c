"""The two models the training core (:mod:`jaxdarts.training`) trains.

- :class:`SupernetTask` (``pretrain``): the supernet's weights with its alphas in
  ``state.extra``, frozen at their near-uniform draw ``alpha_std * N(0, 1)``
  (``weights`` mode) or trained by first-order DARTS (``darts1`` mode: an Adam
  step on the alphas with a held-out batch before every weight step).
- :class:`EvalNetTask` (``train``): the evaluation network of a genotype, with
  DARTS' auxiliary head and drop-path.

Both are frozen dataclasses (static under ``jit``) with the methods of
:class:`jaxdarts.training.Task`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdarts import training as T
from jaxdarts.checkpoint import supernet_init_fn
from jaxdarts.evalnet import EvalNet, torch_default_init
from jaxdarts.genotypes import from_json_dict
from jaxdarts.spaces import NUM_EDGES
from jaxdarts.supernet import SupernetConfig, get_supernet

__all__ = [
    "SupernetTask",
    "EvalNetTask",
    "train_impl",
    "supernet_config",
    "supernet_task",
    "evalnet_task",
]


def train_impl(impl: str) -> str:
    """``"auto"``: ``fused`` on CPU (shifted sums with closed-form gradients: the
    fastest training step there), else ``xla``; any other value as is."""
    if impl != "auto":
        return impl
    return "fused" if jax.default_backend() == "cpu" else "xla"


def supernet_config(config: dict[str, Any], num_classes: int) -> SupernetConfig:
    """The :class:`SupernetConfig` of a run config (``compat=dartsrl``: swap_cells)."""
    s = config["supernet"]
    return SupernetConfig(
        space=s["space"],
        channels=s["channels"],
        layers=s["layers"],
        num_classes=num_classes,
        stem_multiplier=s["stem_multiplier"],
        impl=train_impl(s["impl"]),
        swap_cells=config["compat"] == "dartsrl",
    )


@dataclasses.dataclass(frozen=True)
class SupernetTask:
    """The supernet with its alphas in ``state.extra`` (``{"alphas", "arch_opt"}``).

    ``darts1``: ``before_step`` takes DARTS' Adam step (L2 weight decay) on the
    alphas with the held-out batch's loss (train-mode BN, statistics updated).
    """

    net: SupernetConfig
    mode: str
    alpha_std: float
    arch: tuple[float, float, float, float]  # lr, beta1, beta2, weight_decay

    @property
    def paired_valid(self) -> bool:
        return self.mode == "darts1"

    @property
    def extra_sums(self) -> tuple[str, ...]:
        return ("arch_loss_sum",) if self.paired_valid else ()

    def arch_optimizer(self) -> optax.GradientTransformation:
        lr, b1, b2, wd = self.arch
        return optax.chain(
            optax.add_decayed_weights(wd),
            optax.scale_by_adam(b1=b1, b2=b2, eps=1e-8),
            optax.scale(-lr),
        )

    def init(self, key, image_shape):
        k_init, k_alpha = jax.random.split(key)
        variables = supernet_init_fn(self.net, image_shape)(k_init)
        kn, kr = jax.random.split(k_alpha)
        shape = (NUM_EDGES, get_supernet(self.net).num_ops)
        alphas = {
            "normal": self.alpha_std * jax.random.normal(kn, shape, jnp.float32),
            "reduce": self.alpha_std * jax.random.normal(kr, shape, jnp.float32),
        }
        opt = self.arch_optimizer().init(alphas) if self.paired_valid else ()
        extra = {"alphas": alphas, "arch_opt": opt}
        return variables["params"], variables["batch_stats"], extra

    def _apply(self, params, batch_stats, alphas, x, key, train):
        net = get_supernet(self.net)
        wn, wr = net.edge_weights(alphas["normal"], alphas["reduce"])
        variables = {"params": params, "batch_stats": batch_stats}
        return net.apply_dense(
            variables, wn, wr, x, train=train, key=key, mutable=train
        )

    def before_step(self, state, x, y, key):
        def arch_loss(a):
            logits, _, bs = self._apply(
                state.params, state.batch_stats, a, x, key, True
            )
            ce = T.cross_entropy(logits, y)
            return ce.mean(), (ce.sum(), bs)

        alphas = state.extra["alphas"]
        grads, (ce_sum, bs) = jax.grad(arch_loss, has_aux=True)(alphas)
        upd, opt = self.arch_optimizer().update(grads, state.extra["arch_opt"], alphas)
        extra = {"alphas": optax.apply_updates(alphas, upd), "arch_opt": opt}
        sums = {"arch_loss_sum": ce_sum.astype(jnp.float32)}
        return state.replace(batch_stats=bs, extra=extra), sums

    def loss(self, params, state, x, y, key, hyper):
        alphas = jax.lax.stop_gradient(state.extra["alphas"])
        logits, _, bs = self._apply(params, state.batch_stats, alphas, x, key, True)
        ce = T.cross_entropy(logits, y)
        return ce.mean(), (ce.sum(), logits, bs)

    def logits(self, state, x, key):
        alphas = state.extra["alphas"]
        return self._apply(state.params, state.batch_stats, alphas, x, key, False)[0]

    def hyper(self, epoch, epochs):
        return {}


def supernet_task(config: dict[str, Any], num_classes: int) -> SupernetTask:
    """The :class:`SupernetTask` of a resolved ``pretrain`` config."""
    a = config["arch"]
    return SupernetTask(
        net=supernet_config(config, num_classes),
        mode=config["mode"],
        alpha_std=float(config["supernet"]["alpha_std"]),
        arch=(a["lr"], a["beta1"], a["beta2"], a["weight_decay"]),
    )


@dataclasses.dataclass(frozen=True)
class EvalNetTask:
    """The evaluation network: init (``host``: PyTorch's init drawn with NumPy, no
    compilation; ``flax``: the modules' initialisers), loss (+ auxiliary head),
    per-epoch drop-path probability."""

    model: EvalNet
    init_kind: str = "host"
    auxiliary_weight: float = 0.4
    extra_sums: tuple[str, ...] = ()
    paired_valid: bool = False

    def init(self, key, image_shape):
        x = jnp.zeros((2, *image_shape), jnp.float32)
        rngs = {"params": key, "noise": jax.random.fold_in(key, 1)}
        if self.init_kind == "flax":
            v = jax.jit(self.model.init)(rngs, x)
            return v["params"], v.get("batch_stats", {}), {}
        abstract = jax.eval_shape(self.model.init, rngs, x)
        seed = np.asarray(jax.random.key_data(key)).ravel().tolist()
        params = jax.tree.map(jnp.asarray, torch_default_init(abstract["params"], seed))
        batch_stats = jax.tree_util.tree_map_with_path(
            lambda p, a: (jnp.ones if p[-1].key == "var" else jnp.zeros)(
                a.shape, a.dtype
            ),
            abstract.get("batch_stats", {}),
        )
        return params, batch_stats, {}

    def loss(self, params, state, x, y, key, hyper):
        k_drop, k_path, k_noise = jax.random.split(key, 3)
        out, new_vars = self.model.apply(
            {"params": params, "batch_stats": state.batch_stats},
            x,
            train=True,
            drop_path_prob=hyper["drop_path"] if self.model.drop_path > 0 else None,
            mutable=["batch_stats"],
            rngs={"dropout": k_drop, "drop_path": k_path, "noise": k_noise},
        )
        logits, aux = out if self.model.auxiliary else (out, None)
        ce = T.cross_entropy(logits, y)
        loss = ce.mean()
        if aux is not None:
            loss = loss + self.auxiliary_weight * T.cross_entropy(aux, y).mean()
        return loss, (ce.sum(), logits, new_vars["batch_stats"])

    def logits(self, state, x, key):
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        return self.model.apply(variables, x, train=False, rngs={"noise": key})

    def hyper(self, epoch, epochs):
        return {"drop_path": self.model.drop_path * epoch / epochs}


def evalnet_task(config: dict[str, Any], num_classes: int) -> EvalNetTask:
    """The :class:`EvalNetTask` of a resolved ``train`` config."""
    n = config["net"]
    model = EvalNet(
        from_json_dict(config["genotype"]),
        channels=n["channels"],
        layers=n["layers"],
        num_classes=num_classes,
        auxiliary=n["auxiliary"],
        drop_path=n["drop_path"],
        identity_dropout=n["identity_dropout"],
        impl=n["impl"],
        dtype=jnp.bfloat16 if n["bf16"] else jnp.float32,
    )
    return EvalNetTask(model, n["init"], float(n["auxiliary_weight"]))
