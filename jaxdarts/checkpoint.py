"""Orbax checkpoints of arbitrary training-state pytrees.

:class:`Checkpointer` wraps an ``ocp.CheckpointManager`` (the refactored Orbax API:
``ocp.args.StandardSave`` / ``ocp.args.StandardRestore``). Each step folder holds
two items:

* ``state``: the pytree's leaves as a nested dict of arrays, keyed by the leaves'
  paths (sanitised). Typed PRNG keys are stored as their raw key data
  (``jax.random.key_data``); Python scalars as 0-d NumPy arrays.
* ``meta``: a JSON list of the leaves (path, kind, shape, dtype, PRNG impl), used
  to check a restore target *before* Orbax is asked to read anything, and to
  restore every leaf as the kind it was saved as.

Restoring needs a target with the same structure: either real values or
``jax.ShapeDtypeStruct`` leaves (``jax.eval_shape``). Arrays are placed with the
target leaf's sharding when it has one, else on the default device, so a
checkpoint written on four devices restores on one and the reverse.

Example::

    ckpt = Checkpointer(run / "checkpoints", max_to_keep=3)
    ckpt.save(step, state)            # asynchronous
    ...
    ckpt.wait()                       # before exiting
    state = ckpt.restore(None, jax.eval_shape(init_state, key))
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

__all__ = [
    "Checkpointer",
    "CorruptCheckpointError",
    "restore_newest_valid",
    "save_pytree",
    "load_pytree",
    "SUPERNET_DIR",
    "SUPERNET_META",
    "SUPERNET_FORMAT",
    "save_supernet",
    "load_supernet",
    "supernet_config_from_meta",
    "supernet_init_fn",
]

_FORMAT = "jaxdarts.checkpoint/1"
_STATE = "state"
_META = "meta"

# Leaf kinds. 'jax': jax.Array; 'key': typed PRNG key array; 'numpy': np.ndarray
# or NumPy scalar; 'int' / 'float' / 'bool': Python scalars.
_HOST_KINDS = ("numpy", "int", "float", "bool")
_PY_TYPES = {"bool": bool, "int": int, "float": float}


# --------------------------------------------------------------------------- leaves


def _is_key_dtype(dtype: Any) -> bool:
    return jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _leaf_kind(x: Any) -> str:
    """Classifies a leaf of a state or a target, or raises TypeError."""
    if isinstance(x, bool):
        return "bool"
    if isinstance(x, int):
        return "int"
    if isinstance(x, float):
        return "float"
    if isinstance(x, (np.ndarray, np.generic)):
        return "numpy"
    if isinstance(x, (jax.Array, jax.ShapeDtypeStruct)):
        return "key" if _is_key_dtype(x.dtype) else "jax"
    raise TypeError(f"unsupported leaf type {type(x).__name__}")


def _path_parts(path: Sequence[Any]) -> list[str]:
    """Turns a jax key path into storage names (no '.' or '/', which Orbax uses)."""
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            name = str(k.key)
        elif isinstance(k, jax.tree_util.SequenceKey):
            name = str(k.idx)
        elif isinstance(k, jax.tree_util.GetAttrKey):
            name = k.name
        elif isinstance(k, jax.tree_util.FlattenedIndexKey):
            name = str(k.key)
        else:
            name = str(k)
        parts.append(re.sub(r"[^A-Za-z0-9_\-]", "_", name) or "_")
    return parts or ["value"]


def _flatten(tree: Any) -> tuple[list[tuple[str, list[str], Any]], Any]:
    """Returns ``[(path_string, storage_parts, leaf)]`` and the treedef."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [
        (jax.tree_util.keystr(p), _path_parts(p), leaf) for p, leaf in leaves
    ], treedef


def _nest(items: list[tuple[list[str], Any]]) -> dict[str, Any]:
    """Builds the nested storage dict; refuses two leaves with one storage name."""
    root: dict[str, Any] = {}
    for parts, value in items:
        node = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part in node and (last or not isinstance(node[part], dict)):
                raise ValueError(
                    "two leaves map to the same checkpoint name "
                    f"{'.'.join(parts[: i + 1])!r}; rename one of them"
                )
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return root


def _lookup(tree: dict[str, Any], parts: Sequence[str]) -> Any:
    for part in parts:
        tree = tree[part]
    return tree


def _shape_str(shape: Sequence[int]) -> str:
    return str(tuple(int(s) for s in shape))


def _encode(state: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Splits ``state`` into the storage tree and the JSON leaf table."""
    flat, _ = _flatten(state)
    items, table = [], []
    multi = jax.process_count() > 1
    for pstr, parts, leaf in flat:
        try:
            kind = _leaf_kind(leaf)
        except TypeError as e:
            raise TypeError(f"cannot checkpoint leaf {pstr or '<root>'}: {e}") from e
        if isinstance(leaf, jax.ShapeDtypeStruct):
            raise TypeError(f"cannot checkpoint abstract leaf {pstr or '<root>'}")
        entry: dict[str, Any] = {"path": pstr, "parts": parts, "kind": kind}
        if kind == "key":
            data = jax.random.key_data(leaf)
            entry["impl"] = str(jax.random.key_impl(leaf))
            entry["shape"] = list(leaf.shape)
            entry["data_shape"] = list(data.shape)
            entry["dtype"] = str(data.dtype)
            value = data
        elif kind == "jax":
            value = leaf
        else:
            # Copy host values: an asynchronous save must not see later mutation.
            value = np.array(leaf, copy=True)
        if kind != "key":
            entry["shape"] = list(np.shape(value))
            entry["dtype"] = str(value.dtype)
        if multi and isinstance(value, jax.Array) and value.is_fully_addressable:
            # Several processes: Orbax cannot save an array of one process's
            # devices; every process holds the same value, process 0 saves it.
            value = np.asarray(value)
        items.append((parts, value))
        table.append(entry)
    return _nest(items), {"format": _FORMAT, "leaves": table}


# -------------------------------------------------------------------------- restore


def _default_sharding() -> jax.sharding.Sharding:
    device = jax.config.jax_default_device
    if device is None or isinstance(device, str):
        device = jax.local_devices()[0]
    return jax.sharding.SingleDeviceSharding(device)


def _place(x: Any, sharding: jax.sharding.Sharding) -> jax.Array:
    """``device_put``, or a global array when ``sharding`` spans several processes."""
    if sharding.is_fully_addressable:
        return jax.device_put(x, sharding)
    from jaxdarts.sharding import global_array

    return global_array(x, sharding)


def _target_sharding(leaf: Any) -> jax.sharding.Sharding | None:
    sharding = getattr(leaf, "sharding", None)
    return sharding if isinstance(sharding, jax.sharding.Sharding) else None


def _key_data_struct(leaf: Any) -> jax.ShapeDtypeStruct:
    return jax.eval_shape(
        jax.random.key_data, jax.ShapeDtypeStruct(leaf.shape, leaf.dtype)
    )


def _key_impl_name(leaf: Any) -> str:
    if isinstance(leaf, jax.Array):
        return str(jax.random.key_impl(leaf))
    data = _key_data_struct(leaf)
    one = np.zeros(data.shape[len(leaf.shape) :], data.dtype)
    return str(jax.random.key_impl(jax.random.wrap_key_data(one, dtype=leaf.dtype)))


@dataclass
class _Plan:
    """How one target leaf is restored."""

    entry: dict[str, Any]
    target: Any
    kind: str


def _plan(target: Any, meta: dict[str, Any], where: str) -> tuple[list[_Plan], Any]:
    """Checks ``target`` against the saved leaf table.

    Structure, shapes, PRNG-key-ness and key impl must match (ValueError naming
    the first mismatching leaf). Dtypes may differ: values are cast to the
    target's dtype after reading, and a cast that changes a value is refused
    (see :func:`_convert_exact`).
    """
    if meta.get("format") != _FORMAT:
        raise ValueError(f"{where} was not written by jaxdarts.checkpoint")
    saved = {e["path"]: e for e in meta["leaves"]}
    flat, treedef = _flatten(target)
    plans, seen = [], set()
    for pstr, _, leaf in flat:
        name = pstr or "<root>"
        try:
            kind = _leaf_kind(leaf)
        except TypeError as e:
            raise ValueError(f"target leaf {name}: {e}") from e
        entry = saved.get(pstr)
        if entry is None:
            raise ValueError(
                f"target leaf {name} (shape {_shape_str(np.shape(leaf))}) is not in "
                f"the checkpoint {where}"
            )
        seen.add(pstr)
        t_shape = tuple(np.shape(leaf)) if kind not in ("key", "jax") else leaf.shape
        s_shape = tuple(entry["shape"])
        if t_shape != s_shape:
            raise ValueError(
                f"leaf {name}: checkpoint shape {_shape_str(s_shape)} != target "
                f"shape {_shape_str(t_shape)} (checkpoint {where})"
            )
        if (kind == "key") != (entry["kind"] == "key"):
            raise ValueError(
                f"leaf {name}: the checkpoint holds "
                f"{'a PRNG key' if entry['kind'] == 'key' else 'an array'} but the "
                f"target {'is' if kind == 'key' else 'is not'} a PRNG key array"
            )
        if kind == "key":
            impl = _key_impl_name(leaf)
            if impl != entry["impl"]:
                raise ValueError(
                    f"leaf {name}: checkpoint PRNG impl {entry['impl']} != target "
                    f"impl {impl}"
                )
        plans.append(_Plan(entry, leaf, kind))
    extra = [p for p in saved if p not in seen]
    if extra:
        e = saved[extra[0]]
        raise ValueError(
            f"checkpoint leaf {extra[0] or '<root>'} (shape {_shape_str(e['shape'])}) "
            f"is not in the target ({len(extra)} checkpoint leaves missing from the "
            f"target; checkpoint {where})"
        )
    return plans, treedef


def _abstract(plans: list[_Plan]) -> dict[str, Any]:
    """Storage-tree restore target: saved dtypes, target shardings."""
    items = []
    for p in plans:
        e = p.entry
        dtype = np.dtype(e["dtype"])
        if e["kind"] in _HOST_KINDS:
            leaf = np.zeros(e["shape"], dtype)
        elif e["kind"] == "key":
            leaf = jax.ShapeDtypeStruct(
                tuple(e["data_shape"]), dtype, sharding=_default_sharding()
            )
        else:
            sharding = None
            if p.kind == "jax":
                sharding = _target_sharding(p.target)
            leaf = jax.ShapeDtypeStruct(
                tuple(e["shape"]), dtype, sharding=sharding or _default_sharding()
            )
        items.append((e["parts"], leaf))
    return _nest(items)


def _convert_exact(value: np.ndarray, dtype: Any, name: str) -> np.ndarray:
    """Casts ``value`` to ``dtype``, refusing any cast that changes a value."""
    if value.dtype == np.dtype(dtype):
        return value
    out = value.astype(dtype)
    try:
        same = np.array_equal(out.astype(value.dtype), value, equal_nan=True)
    except TypeError:
        same = np.array_equal(out.astype(value.dtype), value)
    if not same:
        raise ValueError(
            f"leaf {name}: saved value {value!r} cannot be represented exactly as "
            f"{np.dtype(dtype)}"
        )
    return out


def _decode(plans: list[_Plan], restored: dict[str, Any], treedef: Any) -> Any:
    out = []
    for p in plans:
        e, name = p.entry, p.entry["path"] or "<root>"
        value = _lookup(restored, e["parts"])
        if p.kind == "key":
            key = jax.random.wrap_key_data(value, dtype=p.target.dtype)
            sharding = _target_sharding(p.target)
            out.append(key if sharding is None else _place(key, sharding))
        elif p.kind in _PY_TYPES:
            host = np.asarray(value)
            py = _PY_TYPES[p.kind](host.item())
            if not np.array_equal(np.asarray(py, host.dtype), host):
                raise ValueError(f"leaf {name}: saved value {host!r} is not a {p.kind}")
            out.append(py)
        elif p.kind == "numpy":
            host = np.asarray(value)
            host = _convert_exact(host, p.target.dtype, name)
            out.append(host[()] if isinstance(p.target, np.generic) else host)
        else:  # jax target
            dtype = p.target.dtype
            sharding = _target_sharding(p.target) or _default_sharding()
            if isinstance(value, jax.Array) and value.dtype == dtype:
                out.append(value)
            elif e["kind"] == "float" and jax.dtypes.issubdtype(dtype, np.floating):
                # A Python float becomes the target's float dtype, as jnp.asarray
                # would make it (eval_shape turns Python floats into float32).
                out.append(_place(np.asarray(value).astype(dtype), sharding))
            else:
                host = _convert_exact(np.asarray(value), dtype, name)
                out.append(_place(host, sharding))
    return jax.tree_util.tree_unflatten(treedef, out)


# ------------------------------------------------------------------- Checkpointer


class Checkpointer:
    """A folder of numbered checkpoints of one training state (Orbax manager).

    Saving is asynchronous: :meth:`save` returns once the arrays are copied off
    the device; call :meth:`wait` (or :meth:`close`) before the process exits.
    The folder is only created by the first :meth:`save`, so probing a missing
    folder (:meth:`latest_step`, :meth:`restore`) leaves no trace.

    Args:
        directory: Folder of the step sub-folders (``<directory>/<step>``).
        max_to_keep: Number of most recent checkpoints kept (older ones are
            deleted); None keeps all.
    """

    def __init__(self, directory: str | Path, max_to_keep: int | None = 3) -> None:
        self.directory = Path(directory).expanduser().absolute()
        self.max_to_keep = max_to_keep
        self._manager: ocp.CheckpointManager | None = None
        if self.directory.is_dir():
            self._open()

    def _open(self) -> ocp.CheckpointManager:
        if self._manager is None:
            options = ocp.CheckpointManagerOptions(
                max_to_keep=self.max_to_keep,
                create=True,
                cleanup_tmp_directories=True,
            )
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        return self._manager

    def save(self, step: int, state: Any, *, force: bool = True) -> None:
        """Starts saving ``state`` as checkpoint ``step``.

        Args:
            step: Step number (the sub-folder name).
            state: Pytree of jax/NumPy arrays, typed PRNG keys, Python
                ints/floats/bools (flax struct dataclasses included; their
                static ``pytree_node=False`` fields are not stored, they come
                from the restore target).
            force: Save even if the manager's save policy would skip this step.

        An existing checkpoint of the same step is replaced.
        """
        storage, meta = _encode(state)
        manager = self._open()
        if int(step) in self.all_steps():
            manager.wait_until_finished()
            manager.delete(int(step))
        manager.save(
            int(step),
            args=ocp.args.Composite(
                **{
                    _STATE: ocp.args.StandardSave(storage),
                    _META: ocp.args.JsonSave(meta),
                }
            ),
            force=force,
        )

    def wait(self) -> None:
        """Blocks until every pending asynchronous save is on disk."""
        if self._manager is not None:
            self._manager.wait_until_finished()

    def latest_step(self) -> int | None:
        """Returns the newest saved step, or None if there is none."""
        if self._manager is None and not self.directory.is_dir():
            return None
        return self._open().latest_step()

    def all_steps(self) -> list[int]:
        """Returns the saved steps, oldest first."""
        if self._manager is None and not self.directory.is_dir():
            return []
        return sorted(int(s) for s in self._open().all_steps())

    def restore(self, step: int | None, target: Any) -> Any:
        """Restores checkpoint ``step`` (None: the latest) into ``target``'s form.

        Args:
            step: Step to restore, or None for the latest.
            target: Pytree with the saved structure: real values or
                ``jax.ShapeDtypeStruct`` leaves (e.g. from ``jax.eval_shape``).

        Returns:
            A pytree like ``target`` with the saved values, the target's dtypes,
            typed PRNG keys as typed keys, and arrays placed with the target
            leaves' shardings (the default device where a leaf has none).

        Raises:
            FileNotFoundError: The folder is missing or holds no such checkpoint.
            ValueError: ``target`` does not match the saved structure or shapes.
        """
        self.wait()
        steps = self.all_steps()
        if not steps:
            raise FileNotFoundError(
                f"no checkpoint to restore in {self.directory} "
                f"({'folder missing' if not self.directory.exists() else 'empty'})"
            )
        if step is None:
            step = steps[-1]
        if int(step) not in steps:
            raise FileNotFoundError(
                f"no checkpoint for step {step} in {self.directory} (have {steps})"
            )
        manager = self._open()
        where = str(self.directory / str(step))
        meta = manager.restore(
            int(step), args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()})
        )[_META]
        plans, treedef = _plan(target, meta, where)
        restored = manager.restore(
            int(step),
            args=ocp.args.Composite(
                **{_STATE: ocp.args.StandardRestore(_abstract(plans))}
            ),
        )[_STATE]
        return _decode(plans, restored, treedef)

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        if self._manager is not None:
            self._manager.wait_until_finished()
            self._manager.close()
            self._manager = None

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Checkpointer({str(self.directory)!r}, max_to_keep={self.max_to_keep})"


# ---------------------------------------------------------------- one-shot helpers


class CorruptCheckpointError(ValueError):
    """A checkpoint (or saved supernet) that exists but cannot be read back."""


def restore_newest_valid(
    ckpt: Checkpointer, target: Any, warn: Any = None
) -> tuple[int, Any] | None:
    """Restores the newest checkpoint of ``ckpt`` that can be read.

    A checkpoint that fails to restore (a truncated or altered file, a deleted
    manifest or metadata) is skipped with a warning naming it, and the next older
    one is tried.

    Args:
      ckpt: the run's checkpoints.
      target: as :meth:`Checkpointer.restore`.
      warn: ``warn(message)`` for each skipped checkpoint (e.g. a logger's
        ``warning``); None: silent.

    Returns:
      ``(step, state)``, or None when the folder holds no checkpoint at all.

    Raises:
      CorruptCheckpointError: there are checkpoints, but none restores (each
        one's error listed).
    """
    steps = ckpt.all_steps()
    if not steps:
        return None
    errors = []
    for step in reversed(steps):
        try:
            state = ckpt.restore(step, target)
        except Exception as e:  # noqa: BLE001 - any failure means unreadable
            where = ckpt.directory / str(step)
            errors.append(f"{where}: {type(e).__name__}: {_first_line(e)}")
            if warn is not None:
                warn(
                    f"checkpoint {where} cannot be restored ({errors[-1]}); "
                    "falling back to the previous checkpoint"
                )
            continue
        if errors and warn is not None:
            warn(f"resumed from checkpoint {step}, the newest that restores")
        return step, state
    raise CorruptCheckpointError(
        f"no checkpoint in {ckpt.directory} can be restored (damaged files); "
        "start the run again with --out DIR --overwrite:\n  " + "\n  ".join(errors)
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else ""


def save_pytree(path: str | Path, tree: Any, *, overwrite: bool = False) -> Path:
    """Saves ``tree`` synchronously as a single Orbax checkpoint folder ``path``.

    Args:
        path: Folder to create (e.g. ``<pretrain run>/supernet``).
        tree: Pytree as accepted by :meth:`Checkpointer.save`.
        overwrite: Replace an existing checkpoint at ``path``; otherwise an
            existing ``path`` raises FileExistsError.

    Returns:
        The absolute folder path.
    """
    path = Path(path).expanduser().absolute()
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{path} already exists (pass overwrite=True)")
        if not (path / _META).is_dir() or path.is_symlink():
            raise FileExistsError(
                f"{path} exists and is not a jaxdarts pytree checkpoint; not "
                "replacing it"
            )
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    storage, meta = _encode(tree)
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        ckptr.save(
            path,
            args=ocp.args.Composite(
                **{
                    _STATE: ocp.args.StandardSave(storage),
                    _META: ocp.args.JsonSave(meta),
                }
            ),
        )
    return path


def load_pytree(path: str | Path, target: Any) -> Any:
    """Loads a folder written by :func:`save_pytree` into ``target``'s form.

    Args:
        path: The checkpoint folder.
        target: As for :meth:`Checkpointer.restore`.

    Returns:
        The restored pytree.

    Raises:
        FileNotFoundError: ``path`` is missing or is not such a checkpoint.
        ValueError: ``target`` does not match the saved structure or shapes.
    """
    path = Path(path).expanduser().absolute()
    if not (path / _META).is_dir():
        raise FileNotFoundError(
            f"no pytree checkpoint at {path} "
            f"({'missing' if not path.exists() else 'no meta item'})"
        )
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        meta = ckptr.restore(
            path, args=ocp.args.Composite(**{_META: ocp.args.JsonRestore()})
        )[_META]
        plans, treedef = _plan(target, meta, str(path))
        restored = ckptr.restore(
            path,
            args=ocp.args.Composite(
                **{_STATE: ocp.args.StandardRestore(_abstract(plans))}
            ),
        )[_STATE]
    return _decode(plans, restored, treedef)


# ------------------------------------------------------------ supernet weights

#: Sub-folder of a pre-training run that holds the best weights.
SUPERNET_DIR = "supernet"
#: JSON file inside :data:`SUPERNET_DIR` describing the weights.
SUPERNET_META = "supernet.json"
#: ``format`` field of :data:`SUPERNET_META`.
SUPERNET_FORMAT = "jaxdarts.supernet/1"


@functools.lru_cache(maxsize=8)
def supernet_init_fn(net_config: Any, image_shape: tuple[int, ...]) -> Any:
    """``jit(Supernet.init)`` for one :class:`~jaxdarts.supernet.SupernetConfig`,
    compiled once per process (run eagerly, ``init`` dispatches one small program
    per parameter leaf)."""
    from jaxdarts.supernet import get_supernet

    net = get_supernet(net_config)
    return jax.jit(lambda k: net.init(k, image_shape))


def save_supernet(
    path: str | os.PathLike, variables: dict[str, Any], meta: dict[str, Any]
) -> Path:
    """Writes (or atomically replaces) a supernet folder.

    The folder is written beside ``path`` under a temporary name and renamed into
    place, so a crash never leaves a half-written ``supernet/``.

    Args:
      path: the folder (``<run>/supernet``).
      variables: ``{"params", "batch_stats"}``.
      meta: JSON-able description, written as ``supernet.json`` inside. What
        :func:`load_supernet` and search read: ``format`` (:data:`SUPERNET_FORMAT`),
        ``space``, ``channels``, ``layers``, ``num_classes``, ``stem_multiplier``,
        ``swap_cells``, ``image_shape``, ``split_seed`` (the seed of the 50/50
        split the weights were trained on), ``compat``.

    Returns:
      The absolute folder path.
    """
    from jaxdarts.io import atomic_write_json

    path = Path(path).expanduser().absolute()
    tmp = path.with_name(f".{path.name}.tmp")
    old = path.with_name(f".{path.name}.old")
    from jaxdarts import sharding

    # multi-host: every process takes part in the Orbax save; process 0 does the rest
    writer = sharding.is_writer()
    for p in (tmp, old):
        if writer and p.exists():
            shutil.rmtree(p)
    sharding.barrier("supernet-clean")
    tree = {"params": variables["params"], "batch_stats": variables["batch_stats"]}
    save_pytree(tmp, tree)
    if writer:
        atomic_write_json(tmp / SUPERNET_META, meta)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        if old.exists():
            shutil.rmtree(old)
    sharding.barrier("supernet-saved")
    return path


def _supernet_folder(path: str | os.PathLike) -> Path:
    p = Path(path).expanduser().absolute()
    if (p / SUPERNET_META).is_file():
        return p
    if (p / SUPERNET_DIR / SUPERNET_META).is_file():
        return p / SUPERNET_DIR
    if not p.exists():
        raise FileNotFoundError(f"no pre-trained supernet: {p} does not exist")
    hint = ""
    if (p / "config.json").is_file():
        hint = (
            " It looks like a run folder without a finished epoch yet; continue it "
            f"with: python -m jaxdarts.pretrain --resume {p}"
        )
    raise FileNotFoundError(
        f"no pre-trained supernet in {p}: expected {SUPERNET_DIR}/{SUPERNET_META} "
        f"(a pre-training run folder) or {SUPERNET_META} (its {SUPERNET_DIR}/ "
        f"sub-folder).{hint}"
    )


def supernet_config_from_meta(meta: dict[str, Any], impl: str = "auto") -> Any:
    """The :class:`~jaxdarts.supernet.SupernetConfig` of a saved supernet's meta."""
    from jaxdarts.supernet import SupernetConfig

    return SupernetConfig(
        space=meta["space"],
        channels=int(meta["channels"]),
        layers=int(meta["layers"]),
        num_classes=int(meta["num_classes"]),
        stem_multiplier=int(meta["stem_multiplier"]),
        impl=impl,
        swap_cells=bool(meta["swap_cells"]),
        eps=float(meta.get("eps", SupernetConfig.eps)),
    )


# Keys of `expect` that do not change the weights and are never compared.
_EXPECT_SKIP = ("impl", "edges")  # how the ops run, not what the supernet is


def _is_real(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _same(a: Any, b: Any) -> bool:
    from jaxdarts.spaces import get_space

    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, str) or isinstance(b, str):
        if isinstance(a, str) and isinstance(b, str):
            try:
                return get_space(a).name == get_space(b).name
            except ValueError:
                return a == b
        return False
    if _is_real(a) and _is_real(b):
        return float(a) == float(b)
    return a == b


def _show(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(_show(x) for x in v) + ")"
    return repr(v)


def _check_expect(folder: Path, meta: dict[str, Any], expect: Any) -> None:
    if dataclasses.is_dataclass(expect):
        expect = dataclasses.asdict(expect)
    unknown = [k for k in expect if k not in meta and k not in _EXPECT_SKIP]
    if unknown:
        raise ValueError(
            f"cannot check {unknown} against the supernet in {folder}: its "
            f"description has {sorted(k for k in meta if k != 'alphas')}"
        )
    diff = [
        k for k, v in expect.items() if k not in _EXPECT_SKIP and not _same(meta[k], v)
    ]
    if diff:
        saved = ", ".join(f"{k} {_show(meta[k])}" for k in diff)
        asked = ", ".join(f"{k} {_show(expect[k])}" for k in diff)
        raise ValueError(
            f"the supernet in {folder} was trained for {saved}, but the run asks "
            f"for {asked}. Pre-train a matching supernet (python -m "
            "jaxdarts.pretrain with the same settings) or change the run's settings."
            + _matching_flags(meta, diff)
        )


#: The flags that set each supernet description key.
_META_FLAGS = {
    "space": "--set supernet.space={}",
    "channels": "--set supernet.channels={}",
    "layers": "--set supernet.layers={}",
}


def _matching_flags(meta: dict[str, Any], diff: list[str]) -> str:
    """``"\nTo use this supernet: --set supernet.layers=1 ..."`` for ``diff``."""
    flags = [_META_FLAGS[k].format(meta[k]) for k in diff if k in _META_FLAGS]
    if "swap_cells" in diff:
        flags.append("--compat dartsrl" if meta["swap_cells"] else "no --compat")
    if {"image_shape", "num_classes", "dataset"} & set(diff) and "dataset" in meta:
        flags.append(f"--dataset {meta['dataset']}")
    return f"\nTo use this supernet: {' '.join(flags)}" if flags else ""


def load_supernet(
    path: str | os.PathLike, expect: Any = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Loads pre-trained supernet weights (written by ``python -m jaxdarts.pretrain``).

    Args:
      path: a pre-training run folder, or its ``supernet/`` sub-folder.
      expect: optional values the weights must have been trained with: any
        :class:`~jaxdarts.supernet.SupernetConfig` field (``space``, ``channels``,
        ``layers``, ``num_classes``, ``stem_multiplier``, ``swap_cells``, ``eps``;
        ``impl`` is ignored as it does not change the weights), ``image_shape``, or
        any other key of the meta (``dataset``, ``split_seed``, ...). A
        ``SupernetConfig`` works too.

    Returns:
      ``(variables, meta)``: ``{"params", "batch_stats"}`` as jax arrays, and the
      saved description (``supernet.json``; ``image_shape`` as a tuple). Build the
      network with ``Supernet(supernet_config_from_meta(meta))``.

    Raises:
      FileNotFoundError: no supernet in ``path``.
      ValueError: ``expect`` differs from the saved meta (every difference is
        listed), or names a key the meta does not have.
    """
    folder = _supernet_folder(path)
    try:
        meta = json.loads((folder / SUPERNET_META).read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptCheckpointError(
            f"the pre-trained supernet in {folder} is damaged: "
            f"{SUPERNET_META} is not valid JSON ({e}); pre-train it again"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != SUPERNET_FORMAT:
        raise ValueError(
            f"{folder / SUPERNET_META} is not a jaxdarts supernet description "
            f"(format {meta.get('format')!r}, expected {SUPERNET_FORMAT!r})"
        )
    meta["image_shape"] = tuple(int(d) for d in meta["image_shape"])
    if expect is not None:
        _check_expect(folder, meta, expect)
    init = supernet_init_fn(supernet_config_from_meta(meta), meta["image_shape"])
    target = jax.eval_shape(init, jax.random.key(0))
    try:
        return load_pytree(folder, target), meta
    except Exception as e:  # noqa: BLE001 - any failure means unreadable weights
        raise CorruptCheckpointError(
            f"the pre-trained supernet in {folder} cannot be read (damaged or "
            f"incomplete files: {type(e).__name__}: {_first_line(e)}); pre-train "
            "it again or give another --supernet-ckpt"
        ) from None
