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
  scores their architectures: the dense reward path (a ``vmap`` over envs) is
  split by GSPMD, the discrete path (a ``lax.map`` loop over envs, which keeps the
  per-edge ``lax.switch`` a real branch) by a ``shard_map`` around the loop
  (:func:`jaxdarts.env.map_envs`, when the mesh is set while tracing). The PPO
  minibatch epochs gather random transitions and run replicated (they are small
  next to the rewards).
* **Pre-training / evaluation network** (:func:`shard_batch`, :func:`replicate`,
  :func:`constrain_batch`): data parallel: the image batch is split over the devices,
  parameters and optimiser state are replicated.

On one CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (set before
``jax`` is imported) makes 4 devices to try this on.

Several processes (hosts): call :func:`initialize_distributed` first in every
process (the CLIs do when ``JAXDARTS_COORDINATOR`` or ``JAXDARTS_DISTRIBUTED`` is
set; ``python -m jaxdarts.launch`` starts N local processes), then build the mesh
over all devices with ``make_mesh(jax.device_count())``. Every process runs the
same program and builds the same host values (same seed); :func:`replicate`,
:func:`shard_axis` and :func:`put` then place only each process's own slices
(:func:`global_array`), :func:`fetch` brings results back (gathering split arrays
over processes), :func:`barrier` waits for every process with a time-out, and
:func:`is_writer` (process 0) says which process writes files. Example with two
GPU hosts, process 0 on ``10.0.0.1``::

    # on host 10.0.0.1
    JAXDARTS_COORDINATOR=10.0.0.1:12345 JAXDARTS_NUM_PROCESSES=2 \\
    JAXDARTS_PROCESS_ID=0 python -m jaxdarts.search ... --devices 16
    # on the second host: the same with JAXDARTS_PROCESS_ID=1

Every process runs the same program on the same data; each places only its own
devices' share of every global array (:func:`global_array`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
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
    "global_array",
    "put",
    "initialize_distributed",
    "maybe_initialize_distributed",
    "process_index",
    "process_count",
    "is_writer",
    "barrier",
    "fetch",
    "local_batch_to_global",
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
    """Places one leaf with ``sharding``; Python scalars and None pass through.

    One process: ``jax.device_put``. Several processes (a mesh with devices of other
    hosts): :func:`global_array`.
    """
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if sharding.is_fully_addressable:
        return jax.device_put(x, sharding)
    return global_array(x, sharding)


def put(tree: Any, placement: jax.Device | jax.sharding.Sharding) -> Any:
    """``jax.device_put`` of every array leaf that also works on several processes.

    With a sharding that spans the devices of other processes, each leaf becomes a
    :func:`global_array` (every process passes the same value).
    """
    if isinstance(placement, jax.sharding.Sharding):
        return jax.tree.map(lambda x: _put(x, placement), tree)
    return jax.device_put(tree, placement)


def _is_key(x: Any) -> bool:
    return jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key)


def global_array(x: Any, sharding: jax.sharding.Sharding) -> jax.Array:
    """A global ``jax.Array`` with ``sharding`` from a value every process holds.

    Every process calls it with the same ``x`` (same seed, same program: the
    commands build their state the same way on every host); each process then
    places only the slices of its own devices
    (``jax.make_array_from_callback``), so nothing crosses hosts. ``jax.device_put``
    cannot do this: it refuses shardings with devices of other processes. A
    ``jax.Array`` that already spans several processes is resharded by a jitted
    identity instead. Typed PRNG key arrays go through their raw key data.

    Args:
      x: array (NumPy, a process-local ``jax.Array`` or a global one); ``[...]``.
      sharding: the target placement (may span all processes).

    Returns:
      ``jax.Array`` of ``x``'s shape and dtype placed with ``sharding``.
    """
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        if x.sharding == sharding:
            return x
        return jax.jit(lambda a: a, out_shardings=sharding)(x)
    if _is_key(x):
        impl = jax.random.key_impl(x)
        data = global_array(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(data, impl=impl)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


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
            return _put(x, NamedSharding(mesh, _axis_spec(len(shape), axis, name)))
        return _put(x, rep)

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


# ------------------------------------------------------------------- several processes
#: Environment variables read by :func:`initialize_distributed` (seconds for timeouts).
ENV_COORDINATOR = "JAXDARTS_COORDINATOR"
ENV_NUM_PROCESSES = "JAXDARTS_NUM_PROCESSES"
ENV_PROCESS_ID = "JAXDARTS_PROCESS_ID"
ENV_LOCAL_DEVICE_IDS = "JAXDARTS_LOCAL_DEVICE_IDS"
ENV_INIT_TIMEOUT = "JAXDARTS_INIT_TIMEOUT"
ENV_HEARTBEAT_TIMEOUT = "JAXDARTS_HEARTBEAT_TIMEOUT"
ENV_SHUTDOWN_TIMEOUT = "JAXDARTS_SHUTDOWN_TIMEOUT"
ENV_BARRIER_TIMEOUT = "JAXDARTS_BARRIER_TIMEOUT"
#: ``1``/``auto``: the CLIs join a cluster run whose settings JAX detects (SLURM,
#: Open MPI, Cloud TPU) without ``JAXDARTS_COORDINATOR``.
ENV_DISTRIBUTED = "JAXDARTS_DISTRIBUTED"

#: Time-out defaults (seconds), each overridden by its environment variable:
#: ``JAXDARTS_INIT_TIMEOUT`` (how long to wait for every process to connect),
#: ``JAXDARTS_HEARTBEAT_TIMEOUT`` (a process silent that long is declared dead and
#: the others stop), ``JAXDARTS_SHUTDOWN_TIMEOUT`` (how long the processes wait for
#: each other at exit; these three defaults are JAX's own) and
#: ``JAXDARTS_BARRIER_TIMEOUT`` (:func:`barrier`).
DEFAULT_TIMEOUTS = {"init": 300, "heartbeat": 100, "shutdown": 300, "barrier": 600}

_MANAGED_ENV = ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_ID")


def _connected() -> bool:
    """Whether ``jax.distributed.initialize`` ran (without starting a backend)."""
    from jax._src import distributed

    return distributed.global_state.client is not None


def process_index() -> int:
    """This process's index (0 on a single-process run)."""
    return int(jax.process_index()) if _connected() else 0


def process_count() -> int:
    """Number of processes of the run (1 unless :func:`initialize_distributed`)."""
    return int(jax.process_count()) if _connected() else 1


def is_writer() -> bool:
    """True in the one process that writes the run folder, logs and metrics (0)."""
    return process_index() == 0


def _env_int(name: str, default: int | None) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected an integer") from None
    return value


def _timeout(kind: str) -> int:
    name = {
        "init": ENV_INIT_TIMEOUT,
        "heartbeat": ENV_HEARTBEAT_TIMEOUT,
        "shutdown": ENV_SHUTDOWN_TIMEOUT,
        "barrier": ENV_BARRIER_TIMEOUT,
    }[kind]
    value = _env_int(name, DEFAULT_TIMEOUTS[kind])
    if value is None or value < 1:
        raise ValueError(f"{name}={value}: a timeout must be >= 1 second")
    return value


def _local_device_ids() -> list[int] | None:
    raw = os.environ.get(ENV_LOCAL_DEVICE_IDS, "").strip()
    if not raw:
        return None
    try:
        return [int(t) for t in raw.split(",")]
    except ValueError:
        raise ValueError(
            f"{ENV_LOCAL_DEVICE_IDS}={raw!r}: expected comma-separated device "
            "indices, e.g. 0,1"
        ) from None


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: list[int] | None = None,
    force: bool = False,
) -> bool:
    """Connects the processes of a multi-host run (``jax.distributed.initialize``).

    Call it in every process before anything else touches JAX devices; afterwards
    ``jax.devices()`` lists the devices of all hosts and :func:`make_mesh` spans
    them, and a jitted step on globally sharded arrays runs on all hosts. Arguments
    left out come from the environment: on Cloud TPU, SLURM and Open MPI JAX finds
    them itself; otherwise set ``JAXDARTS_COORDINATOR`` (``host:port`` of process 0),
    ``JAXDARTS_NUM_PROCESSES`` and ``JAXDARTS_PROCESS_ID`` (and optionally
    ``JAXDARTS_LOCAL_DEVICE_IDS``, e.g. ``0,1``: the GPUs of this host this process
    uses). The module docstring shows a two-host example; the time-outs are read
    from the environment (:data:`DEFAULT_TIMEOUTS`).

    Args:
      coordinator_address: ``host:port`` of process 0.
      num_processes: total number of processes.
      process_id: this process's index in ``[0, num_processes)``.
      local_device_ids: devices of this host that this process uses.
      force: connect even without any setting (JAX detects them from the cluster).

    Returns:
      True when the processes were connected; False (nothing done) when there is
      one process and no coordinator (and not ``force``).

    Raises:
      ValueError: a malformed environment variable (named in the message).
      RuntimeError: connecting failed at once. When the processes do not all
        connect within the init time-out, JAX itself aborts the process
        (SIGABRT, ``DEADLINE_EXCEEDED``); the clear message is printed to stderr
        just before.
    """
    settings = _process_settings(
        coordinator_address, num_processes, process_id, local_device_ids
    )
    n, rank = settings["num_processes"], settings["process_id"]
    managed = any(k in os.environ for k in _MANAGED_ENV)
    alone = settings["coordinator_address"] is None and n in (None, 1)
    if alone and not managed and not force:
        return False
    if n is not None and rank is not None and not 0 <= rank < n:
        raise ValueError(
            f"{ENV_PROCESS_ID}={rank} must be in [0, {n}) ({ENV_NUM_PROCESSES}={n})"
        )
    _connect(settings, {k: _timeout(k) for k in DEFAULT_TIMEOUTS})
    return True


def _process_settings(
    coordinator_address: str | None,
    num_processes: int | None,
    process_id: int | None,
    local_device_ids: list[int] | None,
) -> dict[str, Any]:
    """The arguments of :func:`initialize_distributed`, the missing ones read from
    the environment (``JAXDARTS_*``).

    Returns:
      ``jax.distributed.initialize``'s keyword arguments ``coordinator_address``,
      ``num_processes``, ``process_id`` and ``local_device_ids`` (``None`` where
      neither given nor set).

    Raises:
      ValueError: a malformed environment variable (named in the message).
    """
    coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR)
    if num_processes is None:
        num_processes = _env_int(ENV_NUM_PROCESSES, None)
    if process_id is None:
        process_id = _env_int(ENV_PROCESS_ID, None)
    if local_device_ids is None:
        local_device_ids = _local_device_ids()
    return {
        "coordinator_address": coordinator_address or None,
        "num_processes": num_processes,
        "process_id": process_id,
        "local_device_ids": local_device_ids,
    }


def _connect(settings: dict[str, Any], timeouts: dict[str, int]) -> None:
    """Calls ``jax.distributed.initialize``; a failure becomes a clear message.

    Args:
      settings: see :func:`_process_settings`.
      timeouts: seconds per kind (see :data:`DEFAULT_TIMEOUTS`).

    Raises:
      RuntimeError: connecting failed at once. When the init time-out expires JAX
        aborts the process instead, so the same message is printed to stderr by a
        timer just before.
    """
    n, rank = settings["num_processes"], settings["process_id"]
    message = (
        f"process {rank} of {n} could not join the run at "
        f"coordinator {settings['coordinator_address']} within {timeouts['init']} s "
        f"({ENV_INIT_TIMEOUT}): check that all {n} processes were "
        f"started with the same {ENV_COORDINATOR} and distinct {ENV_PROCESS_ID}s, "
        "and that process 0 is reachable"
    )
    warn = threading.Timer(
        max(0.5, timeouts["init"] - 1.0),
        lambda: print(f"error: {message}", file=sys.stderr, flush=True),
    )
    warn.daemon = True
    warn.start()
    try:
        jax.distributed.initialize(
            **settings,
            initialization_timeout=timeouts["init"],
            heartbeat_timeout_seconds=timeouts["heartbeat"],
            shutdown_timeout_seconds=timeouts["shutdown"],
        )
    except Exception as e:  # XlaRuntimeError (UNAVAILABLE, ...)
        raise RuntimeError(f"{message} ({e})") from e
    finally:
        warn.cancel()


def maybe_initialize_distributed() -> bool:
    """:func:`initialize_distributed` for the CLIs; exits with a message on failure.

    Connects when ``JAXDARTS_COORDINATOR`` is set, or when ``JAXDARTS_DISTRIBUTED``
    is ``1``/``auto`` (JAX then reads the settings from SLURM, Open MPI or the Cloud
    TPU environment); else does nothing. A bad setting prints one clear line to
    stderr and exits with status 3 instead of a traceback.
    """
    flag = os.environ.get(ENV_DISTRIBUTED, "").strip().lower()
    auto = flag in ("1", "auto", "true", "yes")
    if not os.environ.get(ENV_COORDINATOR) and not auto:
        return False
    try:
        return initialize_distributed(force=auto)
    except (RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(3) from None


_BARRIER_CALLS: dict[str, int] = {}


def barrier(name: str, timeout_s: int | None = None) -> None:
    """Waits until every process reached ``barrier(name)`` (no-op on one process).

    Uses the distributed runtime's barrier (no device work), bounded by
    ``timeout_s`` (default ``JAXDARTS_BARRIER_TIMEOUT``, 600 s): a process that
    died or hangs makes the others fail with a clear error instead of waiting for
    ever.

    Raises:
      RuntimeError: not every process arrived within the time-out.
    """
    if process_count() == 1:
        return
    timeout_s = _timeout("barrier") if timeout_s is None else int(timeout_s)
    from jax._src import distributed

    client = distributed.global_state.client
    if client is None:  # initialised by other means: a device collective
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
        return
    # a fresh id per call (every process calls the same barriers in the same order)
    _BARRIER_CALLS[name] = count = _BARRIER_CALLS.get(name, 0) + 1
    try:
        client.wait_at_barrier(
            f"jaxdarts:{name}:{count}", timeout_in_ms=timeout_s * 1000
        )
    except Exception as e:
        raise RuntimeError(
            f"process {process_index()}: not all {process_count()} processes "
            f"reached {name!r} within {timeout_s} s ({ENV_BARRIER_TIMEOUT}); one of "
            f"them probably failed, see its output ({e})"
        ) from e


def fetch(tree: Any) -> Any:
    """Host (NumPy) copy of every array leaf, gathered over processes if needed.

    A leaf on this process's devices only, or whole on every device (replicated),
    is copied from a local device; a leaf split over several processes is
    gathered with ``process_allgather`` (a collective: on several processes every
    process must call :func:`fetch` on the same tree). Non-array leaves pass
    through.

    Returns:
      The tree with NumPy arrays (the global values) in place of ``jax.Array``.
    """

    def one(x):
        if not isinstance(x, jax.Array):
            return x
        if _is_key(x):
            x = jax.random.key_data(x)
        if x.is_fully_addressable or x.is_fully_replicated:
            return np.asarray(jax.device_get(x))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(one, tree)


def local_batch_to_global(tree: Any, mesh: Mesh) -> Any:
    """Builds a batch split over ``mesh`` from each process's own rows.

    Each process passes its share (``[B / process_count, ...]``: the rows its
    devices hold, in process order) and gets the global ``[B, ...]`` array split
    along the leading axis (``jax.make_array_from_process_local_data``), e.g. for a
    data loader that reads a different part of the data on every host.
    """
    spec = NamedSharding(mesh, P(mesh.axis_names[0]))
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(spec, np.asarray(x)), tree
    )
