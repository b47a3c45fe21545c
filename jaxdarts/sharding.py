"""Several devices and hosts with JAX's own sharding machinery (no hand-written comms).

Everything here builds :class:`jax.sharding.NamedSharding` placements over a 1-D
:class:`~jax.sharding.Mesh` with one axis (``"data"``); ``jax.jit`` then runs the
program SPMD under GSPMD: inputs keep their placement, XLA propagates it through the
program and inserts the collectives (e.g. the mean of the gradients over the data
batch, the batch statistics of train-mode BatchNorm).

Two uses:

* **Search** (:func:`shard_train_state`): the env batch axis of a PPO
  :class:`~jaxdarts.ppo.train.TrainState` (``env_state``, ``last_obs``,
  ``last_done``, ``episode_return``, ``episode_length``: ``[num_envs, ...]``, or
  ``[seeds, num_envs, ...]`` under a seed axis) is split over the devices; the agent
  parameters, optimiser state, keys and counters are replicated, and so are the env
  params (supernet weights, validation images). Each device steps its envs and
  scores their architectures. Only the **dense** reward path
  (``env.reward_path=dense``, a ``vmap`` over envs) is split: the discrete path
  scores the envs one after another with ``lax.map`` (a loop, which keeps the
  per-edge ``lax.switch`` a real branch), and GSPMD does not split a loop's
  iterations over devices, so every device then scores every env (right, but no
  faster than one device). The PPO minibatch epochs gather random transitions and run
  replicated (they are small next to the rewards).
* **Pre-training / evaluation network** (:func:`shard_batch`, :func:`replicate`,
  :func:`constrain_batch`): data parallel: the image batch is split over the devices,
  parameters and optimiser state are replicated.

On one CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (set before
``jax`` is imported) makes 4 devices to try this on.

Several hosts: call :func:`initialize_distributed` first in every process (see
there), then build the mesh over all devices with ``make_mesh(jax.device_count())``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "DATA_AXIS",
    "ENV_FIELDS",
    "make_mesh",
    "replicate",
    "shard_axis",
    "shard_leading",
    "shard_batch",
    "shard_train_state",
    "constrain_batch",
    "use_mesh",
    "mesh_size",
    "initialize_distributed",
]

#: Name of the mesh axis the batch is split over.
DATA_AXIS = "data"

#: TrainState fields that carry the env batch axis (the rest is replicated).
ENV_FIELDS = ("env_state", "last_obs", "last_done", "episode_return", "episode_length")

_FORCE_FLAG = "--xla_force_host_platform_device_count"


def make_mesh(num_devices: int | None = None, axis: str = DATA_AXIS) -> Mesh:
    """A 1-D mesh over the first ``num_devices`` devices, with an Auto axis.

    Auto axis types let ``jit`` propagate shardings (GSPMD); ``jax.make_mesh`` in
    jax 0.10 defaults to Explicit axes, which sharding-in-types then enforces.

    Args:
      num_devices: number of devices (default: all ``jax.devices()``, i.e. every
        device of every host after :func:`initialize_distributed`).
      axis: the mesh axis name.

    Returns:
      ``Mesh`` of shape ``(num_devices,)`` named ``(axis,)``.

    Raises:
      ValueError: ``num_devices`` < 1 or more than there are devices.
    """
    devices = jax.devices()
    n = len(devices) if num_devices is None else int(num_devices)
    if n < 1:
        raise ValueError(f"num_devices must be >= 1, got {num_devices}")
    if n > len(devices):
        backend = jax.default_backend()
        hint = ""
        if backend == "cpu":
            hint = (
                f"; on CPU set XLA_FLAGS={_FORCE_FLAG}={n} in the environment before "
                "the process starts (before jax is imported) to get more host devices"
            )
        raise ValueError(
            f"asked for {n} devices but only {len(devices)} {backend} device(s) "
            f"exist{hint}"
        )
    return Mesh(np.asarray(devices[:n]), (axis,), axis_types=(AxisType.Auto,))


def mesh_size(mesh: Mesh) -> int:
    """Number of devices of ``mesh``."""
    return int(np.prod(list(mesh.shape.values())))


def _put(x: Any, sharding: NamedSharding) -> Any:
    """``device_put`` of one leaf; Python scalars and None pass through."""
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return jax.device_put(x, sharding)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places every array leaf of ``tree`` whole on every device of ``mesh``."""
    rep = NamedSharding(mesh, P())
    return jax.tree.map(lambda x: _put(x, rep), tree)


def _axis_spec(ndim: int, axis: int, name: str) -> P:
    return P(*([None] * axis + [name] + [None] * (ndim - axis - 1)))


def shard_axis(tree: Any, mesh: Mesh, axis: int = 0) -> Any:
    """Splits axis ``axis`` of every array leaf over the mesh.

    A leaf is split when it has that axis and its length there is divisible by the
    number of devices; every other leaf (scalars, keys without the axis, odd
    lengths) is replicated.

    Args:
      tree: pytree of arrays (jax or NumPy); typed PRNG key arrays are fine.
      mesh: a 1-D mesh (:func:`make_mesh`).
      axis: the axis to split (0 = leading).

    Returns:
      The tree with every array leaf a ``jax.Array`` placed on the mesh.
    """
    (name,) = mesh.axis_names
    n = mesh_size(mesh)
    rep = NamedSharding(mesh, P())

    def place(x):
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        shape = np.shape(x)
        if len(shape) > axis and shape[axis] % n == 0 and shape[axis] >= n:
            return jax.device_put(
                x, NamedSharding(mesh, _axis_spec(len(shape), axis, name))
            )
        return jax.device_put(x, rep)

    return jax.tree.map(place, tree)


def shard_leading(tree: Any, mesh: Mesh) -> Any:
    """:func:`shard_axis` on the leading axis (``P("data")``), replicating the rest."""
    return shard_axis(tree, mesh, 0)


def shard_batch(images: Any, labels: Any, mesh: Mesh) -> tuple[jax.Array, jax.Array]:
    """Splits a data batch (``[B, ...]`` images and ``[B]`` labels) over the mesh.

    Raises:
      ValueError: ``B`` is not a multiple of the number of devices (a data-parallel
        step needs equal shards; choose a batch size that the devices divide).
    """
    n = mesh_size(mesh)
    b = int(np.shape(images)[0])
    if b % n or int(np.shape(labels)[0]) != b:
        raise ValueError(
            f"batch of {b} images ({np.shape(labels)[0]} labels) cannot be split "
            f"evenly over {n} devices: use a batch size divisible by {n}"
        )
    return shard_leading(images, mesh), shard_leading(labels, mesh)


def shard_train_state(state: Any, mesh: Mesh, env_axis: int = 0) -> Any:
    """Places a PPO ``TrainState`` for a sharded search.

    The env batch (:data:`ENV_FIELDS`) is split along ``env_axis`` (0 for
    ``make_train``; 1 under a leading seed axis, as in ``jaxdarts.search``);
    everything else (agent parameters, optimiser state, key, counters, the top-k
    track) is replicated.

    Args:
      state: a :class:`jaxdarts.ppo.train.TrainState` (any flax struct with the
        :data:`ENV_FIELDS`).
      mesh: a 1-D mesh.
      env_axis: position of the env axis in the env leaves.

    Returns:
      The placed state.
    """
    fields = {f: shard_axis(getattr(state, f), mesh, env_axis) for f in ENV_FIELDS}
    rest = replicate(state.replace(**{f: None for f in ENV_FIELDS}), mesh)
    return rest.replace(**fields)


def constrain_batch(x: Any) -> Any:
    """Inside ``jit``: asks for ``x``'s leading axis split over the current mesh.

    A no-op unless a mesh with a :data:`DATA_AXIS` axis of size > 1 is set
    (:func:`use_mesh`) and every leaf's leading length is divisible by it. Used on
    batches gathered inside a jitted training loop from a replicated, device-resident
    dataset: without it GSPMD would keep the gathered batch replicated and every
    device would compute the whole step.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or DATA_AXIS not in mesh.axis_names:
        return x
    n = mesh.shape[DATA_AXIS]
    if n <= 1:
        return x

    def one(a):
        if a.ndim == 0 or a.shape[0] % n:
            return a
        return jax.lax.with_sharding_constraint(a, _axis_spec(a.ndim, 0, DATA_AXIS))

    return jax.tree.map(one, x)


@contextlib.contextmanager
def use_mesh(mesh: Mesh | None) -> Iterator[Mesh | None]:
    """``with use_mesh(mesh):`` sets ``mesh`` as the current mesh (None: no-op).

    Needed around the *call* of a jitted function that uses :func:`constrain_batch`
    (the constraint is resolved when the function is traced).
    """
    if mesh is None:
        yield None
        return
    with jax.set_mesh(mesh):
        yield mesh


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: list[int] | None = None,
) -> None:
    """Connects the processes of a multi-host run (``jax.distributed.initialize``).

    Call it in every process before anything else touches JAX devices; afterwards
    ``jax.devices()`` lists the devices of all hosts and :func:`make_mesh` spans
    them, and a jitted step on globally sharded arrays runs on all hosts. Arguments
    left out come from the environment: on Cloud TPU, SLURM and Open MPI JAX finds
    them itself; otherwise set ``JAXDARTS_COORDINATOR`` (``host:port`` of process 0),
    ``JAXDARTS_NUM_PROCESSES`` and ``JAXDARTS_PROCESS_ID``. Example with two GPU
    hosts, process 0 on ``10.0.0.1``::

        # on host 10.0.0.1
        JAXDARTS_COORDINATOR=10.0.0.1:12345 JAXDARTS_NUM_PROCESSES=2 \\
        JAXDARTS_PROCESS_ID=0 python my_script.py
        # on the second host: the same with JAXDARTS_PROCESS_ID=1

    where ``my_script.py`` calls ``initialize_distributed()`` then
    ``make_mesh()``. Every process must run the same program on the same data; each
    host feeds its own shard of a globally sharded batch (e.g. with
    ``jax.make_array_from_process_local_data``).

    Args:
      coordinator_address: ``host:port`` of process 0.
      num_processes: total number of processes.
      process_id: this process's index in ``[0, num_processes)``.
      local_device_ids: devices of this host that this process uses.

    Does nothing when there is one process and no coordinator.
    """
    env = os.environ
    coordinator_address = coordinator_address or env.get("JAXDARTS_COORDINATOR")
    if num_processes is None and "JAXDARTS_NUM_PROCESSES" in env:
        num_processes = int(env["JAXDARTS_NUM_PROCESSES"])
    if process_id is None and "JAXDARTS_PROCESS_ID" in env:
        process_id = int(env["JAXDARTS_PROCESS_ID"])
    managed = any(
        k in env for k in ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_ID")
    )
    if coordinator_address is None and num_processes in (None, 1) and not managed:
        return
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
    )


def maybe_initialize_distributed() -> None:
    """:func:`initialize_distributed` when ``JAXDARTS_COORDINATOR`` is set (CLIs)."""
    if os.environ.get("JAXDARTS_COORDINATOR"):
        initialize_distributed()
