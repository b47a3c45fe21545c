"""Tests for jaxdarts.checkpoint: exact round trips, targets, errors, sharding."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import xla_flags_with_devices

from jaxdarts.checkpoint import Checkpointer, load_pytree, save_pytree

REPO = Path(__file__).resolve().parents[1]


@flax.struct.dataclass
class TrainState:
    step: int
    params: dict
    key: jax.Array
    name: str = flax.struct.field(pytree_node=False, default="ppo")


def make_state(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "train": TrainState(
            step=seed + 3,
            params={
                "w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
                "b": jnp.asarray(rng.integers(-5, 5, size=(4,)), jnp.int32),
            },
            key=jax.random.key(seed),
        ),
        "mask": jnp.asarray([True, False, True]),
        "keys": jax.random.split(jax.random.key(seed + 1), 5),
        "rbg_key": jax.random.key(seed, impl="rbg"),
        "lr": 0.1 + seed,
        "episodes": 7 + seed,
        "done": bool(seed % 2),
        "host": np.arange(4, dtype=np.int64) + seed,
        "extras": [jnp.float32(2.5), None],
    }


def _is_key(x) -> bool:
    return jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key)


def assert_exactly_equal(a, b) -> None:
    la, ta = jax.tree_util.tree_flatten_with_path(a)
    lb, tb = jax.tree_util.tree_flatten_with_path(b)
    assert ta == tb
    for (path, x), (_, y) in zip(la, lb, strict=True):
        where = jax.tree_util.keystr(path)
        assert type(x) is type(y), where
        if _is_key(x):
            assert _is_key(y), where
            assert jax.random.key_impl(x) == jax.random.key_impl(y), where
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        if isinstance(x, (int, float, bool)):
            assert x == y, where
            continue
        assert x.dtype == y.dtype, where
        assert x.shape == y.shape, where
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=where)


def test_round_trip_is_exact(tmp_path):
    state = make_state(1)
    ckpt = Checkpointer(tmp_path / "ckpt")
    ckpt.save(10, state)
    ckpt.wait()
    ckpt.close()
    # A fresh manager on the same folder, as after a restart.
    restored = Checkpointer(tmp_path / "ckpt").restore(10, make_state(0))
    assert_exactly_equal(restored, state)
    assert restored["train"].name == "ppo"
    # The restored key draws the same numbers.
    np.testing.assert_array_equal(
        jax.random.normal(restored["train"].key, (3,)),
        jax.random.normal(state["train"].key, (3,)),
    )


def test_restore_into_eval_shape_target(tmp_path):
    state = make_state(2)
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, state)
        target = jax.eval_shape(lambda: make_state(0))
        restored = ckpt.restore(None, target)
    leaves_t = jax.tree.leaves(target)
    leaves_r = jax.tree.leaves(restored)
    for t, r in zip(leaves_t, leaves_r, strict=True):
        assert isinstance(r, jax.Array)
        assert r.dtype == t.dtype and r.shape == t.shape
        assert r.sharding.device_set == {jax.devices()[0]}
    assert_exactly_equal(restored["train"].params, state["train"].params)
    assert _is_key(restored["keys"]) and _is_key(restored["rbg_key"])
    np.testing.assert_array_equal(
        jax.random.key_data(restored["keys"]), jax.random.key_data(state["keys"])
    )
    assert int(restored["train"].step) == state["train"].step
    assert int(restored["episodes"]) == state["episodes"]
    assert float(restored["lr"]) == np.float32(state["lr"])
    # int64 host array into an int32 abstract leaf: exact values, target dtype.
    assert restored["host"].dtype == jnp.int32
    np.testing.assert_array_equal(restored["host"], state["host"])


def test_latest_step_and_max_to_keep(tmp_path):
    ckpt = Checkpointer(tmp_path / "c", max_to_keep=2)
    assert ckpt.latest_step() is None and ckpt.all_steps() == []
    for step in range(1, 6):
        ckpt.save(step, make_state(step))
    ckpt.wait()
    assert ckpt.all_steps() == [4, 5]
    assert ckpt.latest_step() == 5
    assert_exactly_equal(ckpt.restore(4, make_state(0)), make_state(4))
    assert_exactly_equal(ckpt.restore(None, make_state(0)), make_state(5))
    with pytest.raises(FileNotFoundError, match="step 1"):
        ckpt.restore(1, make_state(0))
    # Saving an existing step replaces it.
    ckpt.save(5, make_state(9))
    assert_exactly_equal(ckpt.restore(5, make_state(0)), make_state(9))
    ckpt.close()


def test_missing_or_empty_folder(tmp_path):
    missing = tmp_path / "does-not-exist"
    ckpt = Checkpointer(missing)
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        ckpt.restore(None, make_state())
    assert not missing.exists()  # probing leaves no trace
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        Checkpointer(empty).restore(None, make_state())


def test_mismatch_errors_name_leaf_and_shapes(tmp_path):
    ckpt = Checkpointer(tmp_path)
    ckpt.save(0, make_state())
    ckpt.wait()

    bad_shape = make_state()
    bad_shape["train"] = bad_shape["train"].replace(
        params={"w": jnp.zeros((3, 5)), "b": bad_shape["train"].params["b"]}
    )
    with pytest.raises(ValueError) as e:
        ckpt.restore(0, bad_shape)
    msg = str(e.value)
    assert "['train'].params['w']" in msg and "(3, 4)" in msg and "(3, 5)" in msg

    extra = make_state()
    extra["new"] = jnp.zeros(2)
    with pytest.raises(ValueError, match=r"\['new'\].*not in the checkpoint"):
        ckpt.restore(0, extra)

    fewer = make_state()
    del fewer["mask"]
    with pytest.raises(ValueError, match=r"\['mask'\].*not in the target"):
        ckpt.restore(0, fewer)

    not_key = make_state()
    not_key["rbg_key"] = jnp.zeros((), jnp.uint32)
    with pytest.raises(ValueError, match="PRNG key"):
        ckpt.restore(0, not_key)

    other_impl = make_state()
    other_impl["train"] = other_impl["train"].replace(
        key=jax.random.key(0, impl="unsafe_rbg")
    )
    with pytest.raises(ValueError, match="impl"):
        ckpt.restore(0, other_impl)

    lossy = make_state()
    lossy["train"] = lossy["train"].replace(
        params={
            "w": jnp.zeros((3, 4), jnp.bfloat16),
            "b": lossy["train"].params["b"],
        }
    )
    with pytest.raises(ValueError, match="exactly"):
        ckpt.restore(0, lossy)
    ckpt.close()


def test_save_and_load_pytree(tmp_path):
    state = make_state(3)
    path = save_pytree(tmp_path / "out" / "supernet", state)
    assert path.is_dir()
    assert_exactly_equal(load_pytree(path, make_state(0)), state)
    with pytest.raises(FileExistsError):
        save_pytree(path, state)
    save_pytree(path, make_state(4), overwrite=True)
    assert_exactly_equal(load_pytree(path, make_state(0)), make_state(4))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_pytree(tmp_path / "nowhere", state)
    with pytest.raises(ValueError, match="not in the checkpoint"):
        load_pytree(path, {**make_state(), "x": 1})


_SHARDED_SCRIPT = textwrap.dedent(
    """
    import sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from jaxdarts.checkpoint import Checkpointer

    assert jax.device_count() == 4, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    row = NamedSharding(mesh, P("data"))
    rep = NamedSharding(mesh, P())

    def state():
        return {
            "w": jnp.arange(32.0).reshape(8, 4),
            "keys": jax.random.split(jax.random.key(3), 8),
            "step": jnp.int32(5),
        }

    # Write a checkpoint with arrays sharded over the 4 devices.
    s = state()
    s = {"w": jax.device_put(s["w"], row), "keys": jax.device_put(s["keys"], row),
         "step": jax.device_put(s["step"], rep)}
    assert len(s["w"].sharding.device_set) == 4
    with Checkpointer(sys.argv[1]) as c:
        c.save(1, s)

    # Restore a single-device checkpoint onto the 4 devices.
    abstract = jax.eval_shape(state)
    abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype,
                                        sharding=row if v.ndim else rep)
                for k, v in abstract.items()}
    r = Checkpointer(sys.argv[2]).restore(None, abstract)
    assert r["w"].sharding == row and r["keys"].sharding == row, r
    assert len(r["w"].addressable_shards) == 4
    ref = state()
    np.testing.assert_array_equal(r["w"], ref["w"])
    np.testing.assert_array_equal(jax.random.key_data(r["keys"]),
                                  jax.random.key_data(ref["keys"]))
    print("SUBPROCESS-OK")
    """
)


def test_sharded_checkpoint_restores_across_device_counts(tmp_path):
    def state():
        return {
            "w": jnp.arange(32.0).reshape(8, 4),
            "keys": jax.random.split(jax.random.key(3), 8),
            "step": jnp.int32(5),
        }

    one_dev = tmp_path / "one-device"
    with Checkpointer(one_dev) as c:
        c.save(1, state())
    four_dev = tmp_path / "four-devices"
    env = dict(os.environ)
    env.update(
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=xla_flags_with_devices(4),
        PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])]),
    )
    proc = subprocess.run(
        [sys.executable, "-c", _SHARDED_SCRIPT, str(four_dev), str(one_dev)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "SUBPROCESS-OK" in proc.stdout, proc.stderr[-3000:]

    # Restore the 4-device checkpoint here, on the default device.
    device = jax.devices()[0]
    restored = Checkpointer(four_dev).restore(None, jax.eval_shape(state))
    for leaf in jax.tree.leaves(restored):
        assert leaf.sharding.device_set == {device}
    assert_exactly_equal(restored, state())
