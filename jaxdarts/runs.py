"""Run folders and the host-side plumbing of the CLIs.

A run folder holds everything one run produced::

    <run>/config.json      resolved config (written once, atomically)
    <run>/env.json         what is needed to repeat the run (versions, devices, ...)
    <run>/metrics.jsonl    one JSON object per line, fsynced
    <run>/log.txt          the log (see :func:`setup_logging`)
    <run>/checkpoints/     Orbax checkpoints (:meth:`RunDir.checkpointer`)
    <run>/resumes.jsonl    one env record per ``--resume``

:meth:`RunDir.create` never replaces an existing run unless asked;
:meth:`RunDir.resume` refuses a changed config. Also here: progress bars
(:func:`progress`), logging (:func:`setup_logging`), JAX's persistent compilation
cache (:func:`enable_compilation_cache`) and Ctrl-C handling
(:class:`GracefulInterrupt`).
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import importlib.metadata
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from tqdm import tqdm

from jaxdarts.checkpoint import Checkpointer
from jaxdarts.io import atomic_write_json, atomic_write_text, to_jsonable

__all__ = [
    "DEFAULT_RESUME_IGNORE",
    "ConfigMismatchError",
    "GracefulInterrupt",
    "RunDir",
    "RunExistsError",
    "RunFolderError",
    "check_out",
    "check_writable",
    "config_diff",
    "looks_like_run",
    "enable_compilation_cache",
    "environment_info",
    "progress",
    "setup_logging",
    "TqdmHandler",
    "format_summary",
    "print_summary",
    "format_duration",
    "compile_timed",
    "TensorBoardLogger",
    "check_tensorboard",
]

CONFIG_FILE = "config.json"
ENV_FILE = "env.json"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "log.txt"
CHECKPOINT_DIR = "checkpoints"
RESUMES_FILE = "resumes.jsonl"

#: Config keys that may differ between a run and its ``--resume`` (a key also
#: covers everything below it; shell-style wildcards are allowed).
DEFAULT_RESUME_IGNORE: tuple[str, ...] = (
    "run.resume",
    "run.overwrite",
    "run.workdir",
    "run.verbose",
    "run.progress",
    "resume",
    "overwrite",
    "workdir",
)

_MISSING = object()
_LOGGER_NAME = "jaxdarts"


# ------------------------------------------------------------------------- errors


class RunExistsError(RuntimeError):
    """The run folder already exists and holds something."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        super().__init__(
            f"run folder {self.path} already exists and is not empty: use "
            f"--resume {self.path} to continue it or --overwrite to replace it"
        )


class RunFolderError(ValueError):
    """A run folder (``--out``, ``--resume``) that cannot be used: a file, a
    folder that is no run folder, a protected or an unwritable place."""


class ConfigMismatchError(ValueError):
    """The config given on resume differs from the run's saved config.

    Attributes:
        differences: One ``'a.b.c: saved X != given Y'`` line per differing key.
    """

    def __init__(
        self, differences: list[str], path: str | os.PathLike | None = None
    ) -> None:
        self.differences = list(differences)
        self.path = None if path is None else Path(path)
        where = f" of run {self.path}" if path is not None else ""
        super().__init__(
            f"the given config differs from the saved config{where} "
            f"({len(self.differences)} key(s)); a resumed run must use the same "
            "config:\n  " + "\n  ".join(self.differences)
        )


# ------------------------------------------------------------------------- config


def _normalize(config: Any) -> Any:
    """Returns ``config`` as plain JSON types (as it reads back from JSON)."""
    if hasattr(config, "to_dict") and not isinstance(config, Mapping):
        config = config.to_dict()  # ml_collections.ConfigDict
    try:
        return json.loads(json.dumps(to_jsonable(config)))
    except (TypeError, ValueError) as e:
        raise TypeError(f"config is not JSON-serialisable: {e}") from e


def _ignored(key: str, ignore: Iterable[str]) -> bool:
    for pattern in ignore:
        if key == pattern or key.startswith(pattern + "."):
            return True
        if fnmatch.fnmatchcase(key, pattern):
            return True
    return False


def _show(value: Any) -> str:
    if value is _MISSING:
        return "<missing>"
    return json.dumps(value, sort_keys=True)


def config_diff(
    saved: Mapping[str, Any], given: Mapping[str, Any], ignore: Iterable[str] = ()
) -> list[str]:
    """Lists the differences between two nested config dicts.

    Args:
        saved: The run's saved config.
        given: The config to compare with it.
        ignore: Dotted keys that don't count; a key also covers its sub-keys, and
            shell-style wildcards (``'run.*'``) are allowed.

    Returns:
        One line per differing leaf key, in sorted key order:
        ``'a.b.c: saved X != given Y'`` with JSON-formatted values, and
        ``<missing>`` for a key present on one side only.
    """
    ignore = tuple(ignore)
    out: list[str] = []

    def walk(a: Any, b: Any, prefix: str) -> None:
        a_map, b_map = isinstance(a, Mapping), isinstance(b, Mapping)
        # Recurse where both are dicts, or one is a non-empty dict and the other
        # is missing (so added/removed sections list each key).
        if (
            (a_map and b_map)
            or (a_map and a and b is _MISSING)
            or (b_map and b and a is _MISSING)
        ):
            a_d = a if a_map else {}
            b_d = b if b_map else {}
            for k in sorted(set(a_d) | set(b_d), key=str):
                key = f"{prefix}.{k}" if prefix else str(k)
                walk(a_d.get(k, _MISSING), b_d.get(k, _MISSING), key)
            return
        if _ignored(prefix, ignore):
            return
        if a is _MISSING or b is _MISSING:
            differ = True
        elif _is_number(a) and _is_number(b):
            differ = a != b
        else:
            differ = type(a) is not type(b) or a != b
        if differ:
            out.append(f"{prefix}: saved {_show(a)} != given {_show(b)}")

    walk(_normalize(saved), _normalize(given), "")
    return out


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


# ---------------------------------------------------------------------- env info


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _jaxdarts_version() -> str | None:
    version = _version("jaxdarts")
    if version is None:
        import jaxdarts

        version = getattr(jaxdarts, "__version__", None)
    return version


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _git_info() -> dict[str, Any]:
    """Commit of the jaxdarts checkout this module was imported from, if any."""
    package = Path(__file__).resolve().parent
    top = _git(["rev-parse", "--show-toplevel"], package)
    if top is None or Path(top).resolve() != package.parent:
        return {"commit": None, "dirty": None}  # installed copy or another repo
    commit = _git(["rev-parse", "HEAD"], package)
    status = _git(["status", "--porcelain", "--untracked-files=no"], package)
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def environment_info() -> dict[str, Any]:
    """Collects what is needed to repeat a run on another machine.

    Returns:
        A JSON-able dict: jaxdarts and library versions, Python, backend, device
        kinds and counts, hostname, command line, git commit of the jaxdarts
        checkout (None without git), relevant environment variables, UTC time.
    """
    import jax

    devices = jax.devices()
    kinds: dict[str, int] = {}
    for d in devices:
        kinds[d.device_kind] = kinds.get(d.device_kind, 0) + 1
    env_vars = ("XLA_FLAGS", "JAX_PLATFORMS", "JAX_ENABLE_X64", "CUDA_VISIBLE_DEVICES")
    return {
        "jaxdarts_version": _jaxdarts_version(),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "platform": sys.platform,
        "versions": {
            name: _version(name)
            for name in (
                "jax",
                "jaxlib",
                "flax",
                "optax",
                "orbax-checkpoint",
                "numpy",
                "distrax",
            )
        },
        "backend": jax.default_backend(),
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "process_count": jax.process_count(),
        "process_index": jax.process_index(),
        "device_kinds": kinds,
        "x64": bool(jax.config.jax_enable_x64),
        "hostname": socket.gethostname(),
        "argv": list(sys.argv),
        "cwd": os.getcwd(),
        "git": _git_info(),
        "env": {k: os.environ[k] for k in env_vars if k in os.environ},
        "time_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


# ------------------------------------------------------------------------- RunDir


def _is_nonempty(path: Path) -> bool:
    if path.is_symlink() or path.is_file():
        return True
    if path.is_dir():
        return any(path.iterdir())
    return path.exists()


def _check_replaceable(path: Path) -> None:
    """Refuses to replace folders whose loss would be a disaster."""
    real = path.resolve()
    protected = {Path(real.anchor), Path.home().resolve()}
    cwd = Path.cwd().resolve()
    package_root = Path(__file__).resolve().parent.parent
    if (
        real in protected
        or real == cwd
        or real in cwd.parents
        or real == package_root
        or real in package_root.parents
    ):
        raise RunFolderError(
            f"refusing to --overwrite {path}: it is the root, home, current or "
            "source folder (or one above them); choose a dedicated run folder"
        )


def _sibling(path: Path, kind: str) -> Path:
    """A free hidden sibling name ``.<kind>-<name>-<time>[-n]`` of ``path``."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = path.with_name(f".{kind}-{path.name}-{stamp}")
    n = 0
    while out.exists() or out.is_symlink():
        n += 1
        out = path.with_name(f".{kind}-{path.name}-{stamp}-{n}")
    return out


def looks_like_run(path: Path) -> bool:
    """Whether ``path`` is a folder with a ``config.json`` (a jaxdarts run folder)."""
    return path.is_dir() and not path.is_symlink() and (path / CONFIG_FILE).is_file()


def check_out(path: str | os.PathLike, *, overwrite: bool) -> Path:
    """Refuses (before any work) a run folder ``--out`` that cannot be used.

    ``path`` must be missing, an empty folder, or (with ``overwrite``) a run
    folder; its parent must be writable (a probe file is created and removed).

    Raises:
      RunExistsError: a non-empty folder without ``overwrite``.
      ValueError: a file, a folder that is no run folder, a protected folder, or
        a place that cannot be written (the message says which).
    """
    path = Path(path).expanduser().absolute()
    if path.is_file() or path.is_symlink() or (path.exists() and not path.is_dir()):
        raise RunFolderError(
            f"--out {path} is an existing file, not a folder: choose a folder path"
        )
    if _is_nonempty(path):
        if not overwrite:
            raise RunExistsError(path)
        if not looks_like_run(path):
            raise RunFolderError(
                f"refusing to --overwrite {path}: it holds files but no "
                f"{CONFIG_FILE}, so it is not a jaxdarts run folder; choose "
                "another --out or empty it yourself"
            )
        _check_replaceable(path)
    check_writable(path)
    return path


def check_writable(path: str | os.PathLike, what: str = "--out") -> None:
    """Raises ValueError unless ``path`` (a folder, existing or not) can be
    created and written: probes the nearest existing folder with a file."""
    path = Path(path).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{what} {path}: it is a file, not a folder")
    probe_dir = path if path.is_dir() else path.parent
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise RunFolderError(
            f"{what} {path}: {probe_dir} is a file, so no folder can be made "
            "under it; choose another path"
        )
    probe = probe_dir / f".jaxdarts-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise RunFolderError(
            f"{what} {path}: cannot write in {probe_dir} ({e.strerror}); choose a "
            "writable place"
        ) from None


def _swap_in(staging: Path, path: Path) -> None:
    """Replaces ``path`` by ``staging`` (two renames), then deletes the old run."""
    old = _sibling(path, "old")
    os.rename(path, old)
    os.rename(staging, path)
    _delete_old(old)


def _delete_old(old: Path) -> None:
    try:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()
    except OSError as e:
        raise OSError(f"the old run was moved to {old} but not deleted: {e}") from e


def _write_new_run(path: Path, saved: dict, env: dict) -> None:
    """Writes a new run's config; an existing run is replaced only once the new
    folder holds its config (built in a hidden sibling, then swapped in)."""
    if _is_nonempty(path):
        staging = _sibling(path, "new")
        staging.mkdir(parents=True)
        try:
            atomic_write_json(staging / CONFIG_FILE, saved)
            atomic_write_json(staging / ENV_FILE, env)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _swap_in(staging, path)
        return
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path / CONFIG_FILE, saved)
    atomic_write_json(path / ENV_FILE, env)


class RunDir:
    """One run's output folder.

    Use :meth:`create` for a new run and :meth:`resume` to continue one.

    On a run of several processes (:mod:`jaxdarts.sharding`) only process 0 is the
    writer: on the others every write method is a no-op, so one folder is written
    once; commands guard their own direct writes (pictures, genotype files) with
    :attr:`writer`. :meth:`checkpointer` is real on every process: Orbax
    coordinates a multi-process save, which all processes take part in.

    Attributes:
        path: The folder (absolute; the same on every process).
        config: The run's config as saved in ``config.json``.
        writer: Whether this process writes the folder.
    """

    def __init__(
        self, path: str | os.PathLike, config: dict[str, Any], writer: bool = True
    ) -> None:
        self.path = Path(path).expanduser().absolute()
        self.config = config
        self.writer = writer

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        config: Mapping[str, Any],
        *,
        overwrite: bool = False,
    ) -> RunDir:
        """Starts a new run folder, writing ``config.json`` and ``env.json``.

        Args:
            path: Folder to create (an existing empty folder is used as is).
            config: The resolved config; must be JSON-able.
            overwrite: Replace an existing run folder (one with a
                ``config.json``). The new run is first written into a hidden
                sibling ``.new-<name>-<time>``, then swapped in by renames; only
                then is the old run deleted, so a failed start loses nothing.

        Returns:
            The new run folder.

        Raises:
            RunExistsError: ``path`` exists, is not empty, and not ``overwrite``.
            TypeError: ``config`` is not JSON-able.
            ValueError: ``path`` is a file, a non-empty folder that is no run
                folder, a protected folder (root, home, current, source) or
                not writable (:func:`check_out`).
        """
        from jaxdarts.sharding import barrier, is_writer

        path = Path(path).expanduser().absolute()
        saved = _normalize(config)
        if not isinstance(saved, dict):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        env = environment_info()
        # Several processes: every process checks (and fails alike) before
        # process 0 touches anything; the others wait until the folder exists.
        barrier("rundir-check")
        check_out(path, overwrite=overwrite)
        barrier("rundir-checked")
        writer = is_writer()
        if writer:
            _write_new_run(path, saved, env)
        barrier("rundir-created")
        return cls(path, saved, writer)

    @classmethod
    def resume(
        cls,
        path: str | os.PathLike,
        config: Mapping[str, Any] | None = None,
        *,
        ignore: Iterable[str] = DEFAULT_RESUME_IGNORE,
    ) -> RunDir:
        """Opens an existing run folder to continue it.

        Args:
            path: The run folder.
            config: If given, the config of the resuming command; it must equal
                the saved one except for keys in ``ignore``.
            ignore: Dotted keys whose difference is allowed (see
                :func:`config_diff`).

        Returns:
            The run folder, with ``config`` loaded from ``config.json``.

        Raises:
            FileNotFoundError: No folder or no ``config.json`` in it.
            ConfigMismatchError: ``config`` differs from the saved config.
        """
        path = Path(path).expanduser().absolute()
        config_file = path / CONFIG_FILE
        if not path.is_dir():
            raise FileNotFoundError(f"cannot resume: run folder {path} does not exist")
        if not config_file.is_file():
            raise FileNotFoundError(
                f"cannot resume {path}: it has no {CONFIG_FILE}, so it is not a "
                "run folder (start a new run without --resume)"
            )
        saved = json.loads(config_file.read_text())
        if config is not None:
            diff = config_diff(saved, config, ignore)
            if diff:
                raise ConfigMismatchError(diff, path)
        from jaxdarts.sharding import is_writer

        run = cls(path, saved, is_writer())
        run._append_line(RESUMES_FILE, environment_info())
        return run

    # ------------------------------------------------------------ files

    def checkpointer(self, max_to_keep: int | None = 3) -> Checkpointer:
        """Returns the run's :class:`Checkpointer` (``<run>/checkpoints``)."""
        return Checkpointer(self.path / CHECKPOINT_DIR, max_to_keep=max_to_keep)

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    def _append_line(self, name: str, record: Mapping[str, Any]) -> None:
        if not self.writer:
            return
        line = json.dumps(to_jsonable(dict(record)), sort_keys=False)
        with open(self.path / name, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def append_metrics(self, record: Mapping[str, Any]) -> None:
        """Appends one record to ``metrics.jsonl`` (flushed and fsynced).

        Args:
            record: JSON-able dict; NumPy/JAX scalars and arrays are converted.
        """
        self._append_line(METRICS_FILE, record)

    def read_metrics(self) -> list[dict[str, Any]]:
        """Returns the records of ``metrics.jsonl`` (empty if none).

        A torn last line (a crash while writing) is skipped.
        """
        return _read_jsonl(self.metrics_path)

    def truncate_metrics(self, max_step: int, key: str = "step") -> None:
        """Drops the records with ``record[key] > max_step`` (atomic rewrite).

        Called on resume with the restored checkpoint's step, so that the
        resumed run's metrics equal an uninterrupted run's. Records without
        ``key`` are kept.
        """
        if not self.writer or not self.metrics_path.exists():
            return
        kept = [
            r
            for r in self.read_metrics()
            if not (isinstance(r.get(key), (int, float)) and r[key] > max_step)
        ]
        atomic_write_text(
            self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept)
        )

    def write_json(self, name: str, obj: Any) -> Path:
        """Writes ``<run>/<name>`` atomically and returns its path."""
        target = self.path / name
        if self.writer:
            atomic_write_json(target, obj)
        return target

    def read_json(self, name: str) -> Any:
        """Reads ``<run>/<name>``."""
        return json.loads((self.path / name).read_text())

    def __repr__(self) -> str:
        extra = "" if self.writer else ", writer=False"
        return f"RunDir({str(self.path)!r}{extra})"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break  # torn final line
            raise
    return out


# ------------------------------------------------------------- progress & logging


def progress(
    total: int,
    desc: str,
    initial: int = 0,
    disable: bool | None = None,
    unit: str = "it",
) -> tqdm:
    """Returns a tqdm progress bar with rate and ETA, written to stderr.

    Args:
        total: Number of units of the whole loop.
        desc: Label in front of the bar.
        initial: Units already done (a resumed run).
        disable: True hides the bar. None: hidden when stderr is not a terminal,
            unless ``JAXDARTS_PROGRESS=1`` (``0`` always hides it).
        unit: Name of one unit (``'update'``, ``'step'``, ``'epoch'``).

    Returns:
        The bar; call ``.update(n)`` and ``.close()`` (or use it as a context
        manager).
    """
    from jaxdarts.sharding import is_writer

    if not is_writer():
        disable = True  # one bar per run, from process 0
    if disable is None:
        flag = os.environ.get("JAXDARTS_PROGRESS", "").strip()
        if flag in ("1", "true", "yes"):
            disable = False
        elif flag in ("0", "false", "no"):
            disable = True
        else:
            disable = not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())
    return tqdm(
        total=total,
        desc=desc,
        initial=initial,
        disable=disable,
        unit=unit,
        dynamic_ncols=True,
        smoothing=0.1,
        mininterval=0.5,
        file=sys.stderr,
    )


class TqdmHandler(logging.Handler):
    """Logs to ``sys.stdout`` (looked up at each record) through ``tqdm.write``,
    which clears the progress bars, prints the line and redraws them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stdout)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def setup_logging(run_path: Path | None, verbose: bool = False) -> logging.Logger:
    """Configures the ``jaxdarts`` logger.

    Console: ``HH:MM:SS message`` on stdout, written around the progress bars
    (:class:`TqdmHandler`) so that the two never share a line. With ``run_path``, also
    ``<run>/log.txt`` (appended, with date and level). Calling it again replaces
    the handlers it added before. On process ``i > 0`` of a run of several
    processes: no file, and only warnings and errors, on stderr, prefixed
    ``[process i]``.

    Args:
        run_path: Run folder for ``log.txt``, or None for the console only.
        verbose: Log DEBUG messages too.

    Returns:
        The ``jaxdarts`` logger.
    """
    logger = logging.getLogger(_LOGGER_NAME)
    for h in list(logger.handlers):
        if getattr(h, "_jaxdarts", False):
            logger.removeHandler(h)
            h.close()
    from jaxdarts.sharding import is_writer, process_index

    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    if not is_writer():
        return _setup_non_writer(logger, process_index())
    console = TqdmHandler()
    console.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    handlers: list[logging.Handler] = [console]
    if run_path is not None:
        run_path = Path(run_path)
        run_path.mkdir(parents=True, exist_ok=True)
        file = logging.FileHandler(run_path / LOG_FILE, encoding="utf-8")
        file.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"
            )
        )
        handlers.append(file)
    for h in handlers:
        h._jaxdarts = True  # type: ignore[attr-defined]
        logger.addHandler(h)
    return logger


def _setup_non_writer(logger: logging.Logger, index: int) -> logging.Logger:
    """Logging of a process that is not the writer: warnings on stderr only."""
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    console.setFormatter(
        logging.Formatter(f"%(asctime)s [process {index}] %(message)s", "%H:%M:%S")
    )
    console._jaxdarts = True  # type: ignore[attr-defined]
    logger.addHandler(console)
    return logger


def enable_compilation_cache(
    path: str | None = None, min_compile_time_secs: float = 0.1
) -> str:
    """Turns on JAX's persistent compilation cache.

    Call it before the first ``jit`` compile of the process.

    Args:
        path: Cache folder; default ``$JAXDARTS_CACHE_DIR``, else
            ``$XDG_CACHE_HOME/jaxdarts/jax-cache`` (``~/.cache/...``).
        min_compile_time_secs: Programs that compiled faster are not cached
            (JAX's default of 1 s would skip most CPU programs).

    Returns:
        The cache folder (created), or ``""`` on a run of several processes: there
        the cache stays off, since a program one process reads from the cache can
        disagree with the one another process compiles (a collective mismatch).
    """
    import jax

    from jaxdarts.sharding import process_count

    if process_count() > 1:
        return ""
    if path is None:
        path = os.environ.get("JAXDARTS_CACHE_DIR")
    if not path:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
            os.path.expanduser("~"), ".cache"
        )
        path = os.path.join(base, "jaxdarts", "jax-cache")
    path = os.path.abspath(os.path.expanduser(path))
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update(
        "jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs)
    )
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return path


# ------------------------------------------------------------------------ Ctrl-C


class GracefulInterrupt:
    """Turns the first Ctrl-C into a request to stop cleanly.

    Inside the ``with`` block the first SIGINT sets :attr:`requested` instead of
    raising, so the host loop can save a checkpoint and leave; a second SIGINT
    raises KeyboardInterrupt. The previous handler is restored on exit. Outside
    the main thread (where signal handlers cannot be set) it does nothing.

    Example::

        with GracefulInterrupt() as stop:
            for step in range(start, total):
                state = train_step(state)
                if stop.requested:
                    break
        ckpt.save(step, state)

    Attributes:
        requested: True once Ctrl-C was pressed.
        active: Whether the handler is installed (main thread only).
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.requested = False
        self.active = False
        self._logger = logger or logging.getLogger(_LOGGER_NAME)
        self._previous: Any = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._logger.warning(
            "interrupt: stopping after the current step (Ctrl-C again to abort now)"
        )

    def __enter__(self) -> GracefulInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
            self.active = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.active:
            previous = self._previous
            if previous is None:  # installed from C; the best we can do
                previous = signal.SIG_DFL
            signal.signal(signal.SIGINT, previous)
            self.active = False


# ----------------------------------------------------------------- end-of-run summary


def format_duration(seconds: float) -> str:
    """``83.2`` -> ``'1m 23s'``; ``3725`` -> ``'1h 02m'``; ``4.2`` -> ``'4.2s'``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    if m < 60:
        return f"{m}m {s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m"


def format_summary(title: str, items: Iterable[tuple[str, Any]]) -> str:
    """A short block for the end of a run: the title, then ``  name  value`` lines
    with the names aligned (None values are left out)."""
    rows = [(k, str(v)) for k, v in items if v is not None]
    width = max((len(k) for k, _ in rows), default=0)
    lines = [title]
    for k, v in rows:
        lines.append(f"  {k:<{width}}  {v}")
    return "\n".join(lines)


def print_summary(title: str, items: Iterable[tuple[str, Any]]) -> str:
    """Prints :func:`format_summary` on stdout (through tqdm, so no bar breaks it)
    and returns the text."""
    text = format_summary(title, items)
    tqdm.write(text, file=sys.stdout)
    return text


# ----------------------------------------------------------------- compile timing


def compile_timed(jitted: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """Compiles ``jitted`` for these arguments ahead of time.

    Returns:
      ``(compiled, seconds)``: call ``compiled`` with the non-static arguments;
      ``seconds`` is the lowering and compile time (a hit in the persistent
      compilation cache is fast), so that timing the calls excludes it.
    """
    import time

    t0 = time.perf_counter()
    compiled = jitted.lower(*args, **kwargs).compile()
    return compiled, time.perf_counter() - t0


# ----------------------------------------------------------------- TensorBoard

_TB_HINT = (
    "--tensorboard needs the 'tensorboard' extra: pip install -e '.[tensorboard]' "
    "(or pip install tensorboardX)"
)


def check_tensorboard() -> None:
    """Raises ImportError with the install hint if tensorboardX is missing."""
    import importlib.util

    if importlib.util.find_spec("tensorboardX") is None:
        raise ImportError(_TB_HINT)


class TensorBoardLogger:
    """Writes the numbers of each metrics record as TensorBoard scalars.

    A record's list values (one per seed) become ``NAME/seedI`` tags; non-numbers
    are skipped. Needs the ``tensorboard`` extra (tensorboardX); view with
    ``tensorboard --logdir <run>/tb``. On a process other than the writer of a run
    of several processes (:func:`jaxdarts.sharding.is_writer`) it writes nothing.
    """

    def __init__(self, logdir: str | os.PathLike) -> None:
        from jaxdarts.sharding import is_writer

        check_tensorboard()
        self._writer = None
        if is_writer():  # multi-host: one event file, from process 0
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(str(logdir))

    def log(self, record: Mapping[str, Any], step: int) -> None:
        """Adds every number of ``record`` at ``step``."""
        for name, value in record.items():
            if isinstance(value, list):
                for i, v in enumerate(value):
                    self._scalar(f"{name}/seed{i}", v, step)
            else:
                self._scalar(name, value, step)

    def _scalar(self, tag: str, value: Any, step: int) -> None:
        if self._writer is not None and _is_number(value):
            self._writer.add_scalar(tag, float(value), step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
