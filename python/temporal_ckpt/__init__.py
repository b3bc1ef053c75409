"""Python client for temporal-ckpt command programs.

A *command program* is a training command the pipeline runs once per segment (see ``docs/programs.md``,
"Programs in other languages"). This module reads the segment's environment, loads a committed checkpoint
after verifying every byte against its manifest, saves a step through ``ckpt commit`` and writes progress
lines on ``CKPT_PROGRESS_FD``.

Standard library, ``numpy`` and ``safetensors`` only; Python 3.9+.

Exit codes a script should use: 0 when its target step is committed, 2 for a failure that retrying cannot
fix (``RunEnvironmentError``, a refused commit with exit code 2, a bad config), 1 (or anything else) for a
failure that is retried from the last committed step. :func:`main` maps this module's errors to those.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, NoReturn, Optional, Tuple

import numpy as np
import safetensors.numpy

__all__ = [
    "CkptError",
    "RunEnvironmentError",
    "NotCommittedError",
    "IntegrityError",
    "CommandError",
    "CommitError",
    "Checkpoint",
    "Run",
    "EvalRun",
    "current_run",
    "current_eval",
    "main",
    "FORMAT",
    "FORMAT_VERSION",
]

FORMAT = "temporal-ckpt"
# 2: manifest file records carry crc32 (zlib.crc32, 8 hex digits); version 1 records carry sha256.
FORMAT_VERSION = 2
STEP_DIGITS = 6
_EXTRA_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CHECKSUM_RES = {"crc32": re.compile(r"^[0-9a-f]{8}$"), "sha256": re.compile(r"^[0-9a-f]{64}$")}
_UINT_RE = re.compile(r"^[0-9]+$")
_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$")


# --------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------


class CkptError(Exception):
    """Base class of this module's errors. ``exit_code`` is what a script should exit with on it."""

    exit_code: int = 1


class RunEnvironmentError(CkptError):
    """A required environment variable is missing or invalid. ``variable`` names it; exit 2."""

    exit_code = 2

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


class NotCommittedError(CkptError):
    """The step has no manifest: it was never committed (or was pruned). Exit 2, like ``ckpt``."""

    exit_code = 2

    def __init__(self, step: int, location: str) -> None:
        super().__init__(f"step {step} is not committed in {location} (no {manifest_file(step)})")
        self.step = step
        self.location = location


class IntegrityError(CkptError):
    """A file of a committed step does not match its manifest (size, checksum) or does not parse. Exit 1."""

    exit_code = 1

    def __init__(self, file: str, message: str) -> None:
        super().__init__(f"{file}: {message}")
        self.file = file


class CommandError(CkptError):
    """A ``ckpt`` command failed. ``exit_code`` is its exit status; ``message`` its last stderr line."""

    def __init__(self, command: str, exit_code: int, message: str) -> None:
        super().__init__(f"ckpt {command} failed (exit {exit_code}): {message}")
        self.command = command
        self.exit_code = exit_code
        self.message = message


class CommitError(CommandError):
    """``ckpt commit`` refused or failed; nothing of the step was published by this rank's call.

    ``exit_code`` 2 means retrying cannot help (already committed, fenced writer, malformed file).
    """

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__("commit", exit_code, message)


# --------------------------------------------------------------------------------------------------------
# File names (checkpoint/names.ts)
# --------------------------------------------------------------------------------------------------------


def pad_step(step: int) -> str:
    """The step as it appears in file names: at least six digits, zero-padded."""
    return str(step).zfill(STEP_DIGITS)


def model_file(step: int) -> str:
    return f"model_{pad_step(step)}.safetensors"


def optim_file(step: int, rank: int) -> str:
    return f"optim_{pad_step(step)}_rank{rank}.safetensors"


def meta_file(step: int) -> str:
    return f"meta_{pad_step(step)}.json"


def manifest_file(step: int) -> str:
    return f"manifest_{pad_step(step)}.json"


def extra_file(step: int, name: str) -> str:
    return f"extra_{pad_step(step)}_{name}"


def _check_step(step: Any, what: str = "step") -> int:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {step!r}")
    return int(step)


# --------------------------------------------------------------------------------------------------------
# Environment parsing
# --------------------------------------------------------------------------------------------------------


def _env(name: str, environ: Mapping[str, str]) -> Optional[str]:
    """The variable's value, or None when unset or empty."""
    value = environ.get(name)
    if value is None or value.strip() == "":
        return None
    return value


def _require(name: str, environ: Mapping[str, str]) -> str:
    value = _env(name, environ)
    if value is None:
        raise RunEnvironmentError(name, "is not set")
    return value


def _uint(name: str, value: str, minimum: int = 0) -> int:
    text = value.strip()
    if not _UINT_RE.match(text) or int(text) < minimum:
        raise RunEnvironmentError(name, f"must be an integer >= {minimum}, got {value!r}")
    return int(text)


def _opt_uint(name: str, environ: Mapping[str, str], default: Optional[int], minimum: int = 0) -> Optional[int]:
    value = _env(name, environ)
    return default if value is None else _uint(name, value, minimum)


def _config(name: str, environ: Mapping[str, str]) -> Dict[str, Any]:
    value = _env(name, environ)
    if value is None:
        return {}
    try:
        parsed = json.loads(value)
    except ValueError as err:
        raise RunEnvironmentError(name, f"is not valid JSON ({err})") from None
    if not isinstance(parsed, dict):
        raise RunEnvironmentError(name, "must be a JSON object")
    return parsed


def _progress_fd(environ: Mapping[str, str]) -> Optional[int]:
    fd = _opt_uint("CKPT_PROGRESS_FD", environ, None)
    if fd is not None:
        try:
            os.fstat(fd)
        except OSError:
            raise RunEnvironmentError("CKPT_PROGRESS_FD", f"file descriptor {fd} is not open") from None
    return fd


def _is_remote(location: str) -> bool:
    m = _URL_RE.match(location)
    return m is not None and m.group(1).lower() != "file"


def _local_path(location: str) -> str:
    m = _URL_RE.match(location)
    return m.group(2) if m is not None else location


# --------------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """A committed step, verified against its manifest.

    ``model`` and ``optimizer`` are the tensors of ``model_<step>.safetensors`` and of the loading rank's
    ``optim_<step>_rank<r>.safetensors`` (None when the step has no optimizer files); ``meta`` is
    ``meta_<step>.json`` (with what ``ckpt commit`` added: ``program``, ``world_size``, ``format_version``);
    ``extras`` maps each ``extra_<step>_<name>`` to its bytes; ``world_size`` is the world size it was saved
    with.
    """

    step: int
    world_size: int
    model: Dict[str, np.ndarray]
    optimizer: Optional[Dict[str, np.ndarray]]
    meta: Dict[str, Any]
    extras: Dict[str, bytes] = field(default_factory=dict)


def _read_verified(directory: str, name: str, record: Any) -> bytes:
    """The file's bytes, read once, after checking their size and every checksum the manifest's record has
    (crc32, or sha256 in manifests of format version 1) against them."""
    if (
        not isinstance(record, dict)
        or isinstance(record.get("bytes"), bool)
        or not isinstance(record.get("bytes"), int)
        or not any(kind in record for kind in _CHECKSUM_RES)
        or not all(
            isinstance(record[kind], str) and pattern.match(record[kind])
            for kind, pattern in _CHECKSUM_RES.items()
            if kind in record
        )
    ):
        raise IntegrityError(name, "the manifest's record of it is malformed")
    try:
        with open(os.path.join(directory, name), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise IntegrityError(name, "listed in the manifest but missing") from None
    if len(data) != record["bytes"]:
        raise IntegrityError(name, f"has {len(data)} bytes, the manifest says {record['bytes']}")
    digests = {
        "crc32": lambda: f"{zlib.crc32(data):08x}",
        "sha256": lambda: hashlib.sha256(data).hexdigest(),
    }
    for kind, digest_of in digests.items():
        actual = digest_of() if kind in record else None
        if actual is not None and actual != record[kind]:
            raise IntegrityError(name, f"{kind} {actual} does not match the manifest's {record[kind]}")
    return data


def _tensors(name: str, data: bytes) -> Dict[str, np.ndarray]:
    try:
        return dict(safetensors.numpy.load(data))
    except Exception as err:  # safetensors raises its own SafetensorError
        raise IntegrityError(name, f"is not a valid safetensors file ({err})") from None


def _load_local(
    directory: str, step: int, rank: int, optimizer_rank: Optional[int], with_optimizer: bool
) -> Checkpoint:
    mname = manifest_file(step)
    try:
        with open(os.path.join(directory, mname), "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise NotCommittedError(step, directory) from None
    try:
        manifest = json.loads(raw)
    except ValueError as err:
        raise IntegrityError(mname, f"is not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IntegrityError(mname, f'is not a {FORMAT} manifest (field "format")')
    version = manifest.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise IntegrityError(mname, 'field "format_version" must be an integer >= 1')
    if version > FORMAT_VERSION:
        raise IntegrityError(mname, f"format_version {version} is newer than this client ({FORMAT_VERSION})")
    if manifest.get("step") != step:
        raise IntegrityError(mname, f'field "step" is {manifest.get("step")!r}, the file name says {step}')
    world_size = manifest.get("world_size")
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise IntegrityError(mname, 'field "world_size" must be an integer >= 1')
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise IntegrityError(mname, 'field "files" must be an object')

    for required in (model_file(step), meta_file(step)):
        if required not in files:
            raise IntegrityError(mname, f"lists no {required}")
    model = _tensors(model_file(step), _read_verified(directory, model_file(step), files[model_file(step)]))
    meta_bytes = _read_verified(directory, meta_file(step), files[meta_file(step)])
    try:
        meta = json.loads(meta_bytes)
    except ValueError as err:
        raise IntegrityError(meta_file(step), f"is not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise IntegrityError(meta_file(step), "must be a JSON object")

    optim_prefix = f"optim_{pad_step(step)}_rank"
    has_optim = any(name.startswith(optim_prefix) for name in files)
    optimizer: Optional[Dict[str, np.ndarray]] = None
    if has_optim and with_optimizer:
        want = rank if optimizer_rank is None else optimizer_rank
        oname = optim_file(step, want)
        if oname not in files:
            raise CkptError(
                f"step {step} was saved by {world_size} rank(s) and has no optimizer shard for rank {want}"
                " (pass optimizer_rank= to read another rank's shard)"
            )
        optimizer = _tensors(oname, _read_verified(directory, oname, files[oname]))

    extras: Dict[str, bytes] = {}
    extra_prefix = f"extra_{pad_step(step)}_"
    for name in sorted(files):
        if name.startswith(extra_prefix):
            extras[name[len(extra_prefix):]] = _read_verified(directory, name, files[name])
    return Checkpoint(step, world_size, model, optimizer, meta, extras)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{what} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} is {number}: progress lines carry finite numbers only")
    return number


def _tail_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


class _Location:
    """What a training run and an evaluation share: a checkpoint directory and the ``ckpt`` executable."""

    def __init__(
        self,
        dir: str,
        config: Dict[str, Any],
        program: Optional[str],
        bin: Optional[str],
        rank: int = 0,
        staging_parent: Optional[str] = None,
    ) -> None:
        self.dir = dir
        self.config = config
        self.program = program
        self.bin = bin
        self.rank = rank
        self.staging_parent = staging_parent

    def _ckpt(self) -> List[str]:
        """The command line prefix that runs ``ckpt`` (CKPT_BIN, else ``ckpt`` on PATH)."""
        exe = self.bin or shutil.which("ckpt")
        if exe is None:
            raise RunEnvironmentError("CKPT_BIN", "is not set and there is no ckpt on PATH")
        return [exe]

    def _run_ckpt(self, command: str, args: List[str], env: Mapping[str, str]) -> Tuple[int, str]:
        """Runs ``ckpt COMMAND ARGS``: its stdout goes to our stderr (a program's stdout stays its own, an
        evaluation's JSON line included), its stderr to ours once it exits. Returns (exit code, stderr)."""
        proc = subprocess.run(
            self._ckpt() + [command] + args,
            stdin=subprocess.DEVNULL,
            stdout=2,
            stderr=subprocess.PIPE,
            env=dict(env),
        )
        err = proc.stderr.decode("utf-8", "replace")
        if err:
            sys.stderr.write(err)
            sys.stderr.flush()
        return proc.returncode, err

    def _tempdir(self, prefix: str) -> str:
        if self.staging_parent:
            os.makedirs(self.staging_parent, exist_ok=True)
        return tempfile.mkdtemp(prefix=prefix, dir=self.staging_parent or None)

    def _child_env(self) -> Dict[str, str]:
        # The progress fd is not inherited (close_fds): a child must not write to whatever that number is.
        env = dict(os.environ)
        env.pop("CKPT_PROGRESS_FD", None)
        return env

    def load(
        self, step: int, *, optimizer_rank: Optional[int] = None, with_optimizer: bool = True
    ) -> Checkpoint:
        """Loads committed step ``step``, verifying each file it reads against the manifest.

        Reads the model, meta, extras and, when the step has optimizer files and ``with_optimizer`` is
        true, ``optimizer_rank``'s shard (default: this process's rank; ``optimizer`` is None otherwise).
        Raises :class:`NotCommittedError` when the step has no manifest, :class:`IntegrityError` (naming
        the file) when a size, checksum or format does not match, and :class:`CkptError` when the step has
        optimizer files but none for the requested rank. A remote
        directory (``s3://``) is first copied with ``ckpt copy DIR TMP --step N`` into a temporary local
        directory, which is removed afterwards.
        """
        step = _check_step(step)
        if optimizer_rank is not None:
            _check_step(optimizer_rank, "optimizer_rank")
        if not _is_remote(self.dir):
            return _load_local(_local_path(self.dir), step, self.rank, optimizer_rank, with_optimizer)
        tmp = self._tempdir("ckpt-load-")
        try:
            local = os.path.join(tmp, "ckpt")
            code, err = self._run_ckpt("copy", [self.dir, local, "--step", str(step)], self._child_env())
            if code != 0:
                message = _tail_line(err)
                if code == 2 and "not committed" in message:
                    raise NotCommittedError(step, self.dir)
                raise CommandError("copy", code, message)
            return _load_local(local, step, self.rank, optimizer_rank, with_optimizer)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class Run(_Location):
    """A training segment, as its environment describes it (see :func:`current_run`).

    Attributes: ``dir``, ``resume_step`` (None for a fresh run), ``target_step``, ``save_every``,
    ``seed``, ``config`` (dict), ``program``, ``rank``, ``world_size``, ``local_rank``, ``master_addr``,
    ``master_port`` (None outside multi-rank runs), ``progress_fd`` (None: progress is not written),
    ``bin`` (the ``ckpt`` executable), ``staging_parent`` (where staging directories are made).
    """

    def __init__(
        self,
        dir: str,
        resume_step: Optional[int],
        target_step: int,
        save_every: int,
        seed: int,
        config: Dict[str, Any],
        program: Optional[str] = None,
        progress_fd: Optional[int] = None,
        bin: Optional[str] = None,
        rank: int = 0,
        world_size: int = 1,
        local_rank: int = 0,
        master_addr: Optional[str] = None,
        master_port: Optional[int] = None,
        staging_parent: Optional[str] = None,
    ) -> None:
        super().__init__(dir, config, program, bin, rank, staging_parent)
        self.resume_step = resume_step
        self.target_step = target_step
        self.save_every = save_every
        self.seed = seed
        self.progress_fd = progress_fd
        self.world_size = world_size
        self.local_rank = local_rank
        self.master_addr = master_addr
        self.master_port = master_port

    def __repr__(self) -> str:
        return (
            f"Run(dir={self.dir!r}, resume_step={self.resume_step}, target_step={self.target_step}, "
            f"save_every={self.save_every}, seed={self.seed}, rank={self.rank}, world_size={self.world_size})"
        )

    def should_save(self, step: int) -> bool:
        """Whether ``step`` (steps done) is a save point: a multiple of ``save_every``, or the target."""
        return step % self.save_every == 0 or step == self.target_step

    # -- progress -------------------------------------------------------------------------------------

    def _emit(self, obj: Dict[str, Any]) -> None:
        if self.progress_fd is None:
            return
        data = (json.dumps(obj, allow_nan=False, separators=(",", ":")) + "\n").encode("utf-8")
        view = memoryview(data)
        while view:
            written = os.write(self.progress_fd, view)
            view = view[written:]

    def report(self, step: int, loss: Any, **metrics: Any) -> None:
        """Writes ``{"type":"progress","step","loss","metrics"}`` on the progress fd (nothing without one).

        ``loss`` and each metric must be a finite number (Python or numpy): a NaN or infinity raises
        ``ValueError``, anything else ``TypeError``.
        """
        line = {
            "type": "progress",
            "step": _check_step(step),
            "loss": _finite(loss, "loss"),
            "metrics": {str(k): _finite(v, f"metric {k}") for k, v in metrics.items()},
        }
        self._emit(line)

    def log(self, msg: str) -> None:
        """Writes one line to stderr, prefixed with this process's rank."""
        sys.stderr.write(f"[rank {self.rank}] {msg}\n")
        sys.stderr.flush()

    # -- saving ---------------------------------------------------------------------------------------

    def save(
        self,
        step: int,
        model: Optional[Mapping[str, np.ndarray]],
        optimizer: Optional[Mapping[str, np.ndarray]] = None,
        meta: Optional[Mapping[str, Any]] = None,
        extras: Optional[Mapping[str, bytes]] = None,
    ) -> None:
        """Writes step ``step``'s files of this rank into a fresh staging directory and commits them.

        Rank 0 writes ``model_<step>.safetensors`` (``model`` is required there and ignored on other
        ranks), ``meta_<step>.json`` (``meta`` plus ``"step"`` and, when absent, ``"config": run.config``)
        and ``extra_<step>_<name>`` for each of ``extras``; every rank writes
        ``optim_<step>_rank<r>.safetensors`` when ``optimizer`` is given (give it on every rank or none).
        Each file and the directory are fsynced, then ``ckpt commit DIR --step N --rank R --world-size W
        --from STAGING`` runs; the staging directory is removed whatever happens. Raises
        :class:`CommitError` when the commit exits nonzero. On success writes
        ``{"type":"saved","step","seconds","bytes"}`` (this rank's bytes) on the progress fd.
        """
        started = time.monotonic()
        step = _check_step(step)
        leader = self.rank == 0
        if leader and model is None:
            raise ValueError("rank 0 must pass the model to save()")
        meta_obj: Dict[str, Any] = dict(meta or {})
        if "step" in meta_obj and meta_obj["step"] != step:
            raise ValueError(f'meta["step"] is {meta_obj["step"]!r}, saving step {step}')
        meta_obj["step"] = step
        meta_obj.setdefault("config", self.config)
        if not isinstance(meta_obj["config"], dict):
            raise ValueError('meta["config"] must be a dict')
        extras = dict(extras or {})
        for name, value in extras.items():
            if not isinstance(name, str) or not _EXTRA_NAME_RE.match(name):
                raise ValueError(
                    f"extra name {name!r}: letters, digits, '.', '_' and '-' only, not starting with '.'"
                )
            if not isinstance(value, (bytes, bytearray, memoryview)):
                raise TypeError(f"extra {name!r} must be bytes, got {type(value).__name__}")
        meta_bytes = json.dumps(meta_obj, allow_nan=False, default=_json_default, indent=2).encode("utf-8")

        staging = self._tempdir("ckpt-staging-")
        total = 0
        try:
            written: List[str] = []
            if leader:
                assert model is not None
                written.append(self._write_tensors(staging, model_file(step), model))
            if optimizer is not None:
                written.append(self._write_tensors(staging, optim_file(step, self.rank), optimizer))
            if leader:
                written.append(self._write_bytes(staging, meta_file(step), meta_bytes))
                for name, value in extras.items():
                    written.append(self._write_bytes(staging, extra_file(step, name), bytes(value)))
            for path in written:
                with open(path, "rb") as f:
                    os.fsync(f.fileno())
                total += os.path.getsize(path)
            _fsync_dir(staging)
            args = [self.dir, "--step", str(step), "--rank", str(self.rank),
                    "--world-size", str(self.world_size), "--from", staging]
            code, err = self._run_ckpt("commit", args, self._child_env())
            if code != 0:
                raise CommitError(code, _tail_line(err))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._emit({"type": "saved", "step": step, "seconds": round(time.monotonic() - started, 6),
                    "bytes": total})

    @staticmethod
    def _write_tensors(staging: str, name: str, tensors: Mapping[str, np.ndarray]) -> str:
        path = os.path.join(staging, name)
        arrays = {}
        for key, value in tensors.items():
            if not isinstance(value, np.ndarray):
                raise TypeError(f"{name}: tensor {key!r} must be a numpy array, got {type(value).__name__}")
            arrays[str(key)] = np.ascontiguousarray(value)
        safetensors.numpy.save_file(arrays, path)
        return path

    @staticmethod
    def _write_bytes(staging: str, name: str, data: bytes) -> str:
        path = os.path.join(staging, name)
        with open(path, "xb") as f:
            f.write(data)
        return path


class EvalRun(_Location):
    """An evaluation of one committed step (see :func:`current_eval`).

    Attributes: ``dir``, ``step`` (the step to evaluate), ``config`` (dict), ``data`` (``CKPT_EVAL_DATA``,
    the evaluation data the pipeline names, or None), ``seed`` (None when ``CKPT_SEED`` is unset, as it is
    under the pipeline: record the seed in meta and read it from there), ``program``, ``bin``.
    """

    def __init__(
        self,
        dir: str,
        step: int,
        config: Dict[str, Any],
        seed: Optional[int] = None,
        program: Optional[str] = None,
        bin: Optional[str] = None,
        staging_parent: Optional[str] = None,
        data: Optional[str] = None,
    ) -> None:
        super().__init__(dir, config, program, bin, 0, staging_parent)
        self.step = step
        self.seed = seed
        self.data = data

    def __repr__(self) -> str:
        return f"EvalRun(dir={self.dir!r}, step={self.step}, seed={self.seed})"

    def load(
        self, step: Optional[int] = None, *, optimizer_rank: Optional[int] = None, with_optimizer: bool = False
    ) -> Checkpoint:
        """Loads ``step`` (default: the step to evaluate), verified; see :meth:`Run.load`. Skips the
        optimizer shard unless ``with_optimizer``."""
        return super().load(
            self.step if step is None else step, optimizer_rank=optimizer_rank, with_optimizer=with_optimizer
        )


def current_run(environ: Optional[Mapping[str, str]] = None) -> Run:
    """The training segment this process runs, from its environment (``os.environ`` by default).

    Required: ``CKPT_DIR``, ``CKPT_TARGET_STEP``, ``CKPT_SAVE_EVERY`` (>= 1), ``CKPT_SEED``. Optional:
    ``CKPT_RESUME_STEP`` (empty or unset: a fresh run), ``CKPT_CONFIG`` (a JSON object, default ``{}``),
    ``CKPT_PROGRAM``, ``CKPT_PROGRESS_FD``, ``CKPT_BIN`` (default: ``ckpt`` on PATH), ``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK`` (0, 1, 0), ``MASTER_ADDR``, ``MASTER_PORT``, ``CKPT_STAGING_DIR``.
    Raises :class:`RunEnvironmentError` naming the first missing or invalid variable.
    """
    env = os.environ if environ is None else environ
    directory = _require("CKPT_DIR", env)
    target = _uint("CKPT_TARGET_STEP", _require("CKPT_TARGET_STEP", env))
    save_every = _uint("CKPT_SAVE_EVERY", _require("CKPT_SAVE_EVERY", env), 1)
    seed = _uint("CKPT_SEED", _require("CKPT_SEED", env))
    resume = _opt_uint("CKPT_RESUME_STEP", env, None)
    if resume is not None and resume > target:
        raise RunEnvironmentError("CKPT_RESUME_STEP", f"{resume} is past CKPT_TARGET_STEP {target}")
    config = _config("CKPT_CONFIG", env)
    world_size = _opt_uint("WORLD_SIZE", env, 1, 1)
    rank = _opt_uint("RANK", env, 0)
    local_rank = _opt_uint("LOCAL_RANK", env, 0)
    assert world_size is not None and rank is not None and local_rank is not None
    if rank >= world_size:
        raise RunEnvironmentError("RANK", f"{rank} is not below WORLD_SIZE {world_size}")
    port = _opt_uint("MASTER_PORT", env, None)
    if port is not None and not 0 < port < 65536:
        raise RunEnvironmentError("MASTER_PORT", f"{port} is not a TCP port")
    return Run(
        dir=directory,
        resume_step=resume,
        target_step=target,
        save_every=save_every,
        seed=seed,
        config=config,
        program=_env("CKPT_PROGRAM", env),
        progress_fd=_progress_fd(env),
        bin=_env("CKPT_BIN", env),
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
        master_addr=_env("MASTER_ADDR", env),
        master_port=port,
        staging_parent=_env("CKPT_STAGING_DIR", env),
    )


def current_eval(environ: Optional[Mapping[str, str]] = None) -> EvalRun:
    """The evaluation this process runs, from its environment (``os.environ`` by default).

    Required: ``CKPT_DIR``, ``CKPT_STEP`` (the committed step to evaluate). Optional: ``CKPT_CONFIG``
    (JSON object, default ``{}``), ``CKPT_EVAL_DATA``, ``CKPT_SEED``, ``CKPT_PROGRAM``, ``CKPT_BIN``,
    ``CKPT_STAGING_DIR``.
    Raises :class:`RunEnvironmentError` naming the first missing or invalid variable.
    """
    env = os.environ if environ is None else environ
    return EvalRun(
        dir=_require("CKPT_DIR", env),
        step=_uint("CKPT_STEP", _require("CKPT_STEP", env)),
        config=_config("CKPT_CONFIG", env),
        seed=_opt_uint("CKPT_SEED", env, None),
        program=_env("CKPT_PROGRAM", env),
        bin=_env("CKPT_BIN", env),
        staging_parent=_env("CKPT_STAGING_DIR", env),
        data=_env("CKPT_EVAL_DATA", env),
    )


def main(fn: Callable[[], Optional[int]]) -> NoReturn:
    """Runs ``fn`` and exits with its return value (None: 0).

    A :class:`CkptError` prints one line on stderr and exits 2 when retrying cannot help
    (:class:`RunEnvironmentError`, :class:`NotCommittedError`, a command that exited 2) and 1 otherwise.
    Other exceptions propagate (Python exits 1, a retried failure).
    """
    try:
        code = fn()
    except CkptError as err:
        sys.stderr.write(f"error: {err}\n")
        sys.stderr.flush()
        sys.exit(2 if err.exit_code == 2 else 1)
    sys.exit(0 if code is None else code)
