"""The run directory: what is written where, always atomically.

    RUN/config.toml       family, size, model and training config, data, compute class
    RUN/throughput.json   the throughput certificate the budget came from
    RUN/budget.json       the budget and every input of its arithmetic
    RUN/mix.json          the data mix (normalised weights), when trained with --mix
    RUN/metrics.jsonl     one JSON object per logged step or validation
    RUN/tb/               TensorBoard events
    RUN/checkpoints/      last.pt and previous.pt, each with a .sha256 beside it
    RUN/.lock             held by the process training in the directory ("PID HOST" inside)
    RUN/result.json       the schema-versioned result, written last: its presence means done
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from languini.config import RunConfig, load_run_config, to_toml
from languini.errors import UserError
from languini.io import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json

RESULT_SCHEMA = 1
LOCK = ".lock"
MIN_MODEL_STEPS = 300
"""Steps below which a selection's proxy or reference model has barely started to learn: its
scores or weights are reported, with a warning."""


def result_warnings(result: dict[str, Any], warmup_steps: int) -> list[str]:
    """Why a finished run's numbers may not mean anything (result.json's `warnings`)."""
    found = []
    if result["steps"] < warmup_steps:
        found.append(f"the run trained {result['steps']} steps, fewer than its {warmup_steps}-step warm-up: "
                     "too short to say anything about the model")
    test, unigram = result["test"]["bits_per_byte"], result["unigram_bits_per_byte"]
    if not test < unigram:
        found.append(f"test bits-per-byte {test:.4f} is not below the unigram baseline {unigram:.4f}: the model "
                     "predicts no better than token frequencies")
    return found


def model_warnings(role: str, result: dict[str, Any], run: str | os.PathLike) -> list[str]:
    """Why a selection model (a proxy, a reference, an embedder) may not mean anything."""
    found = [f"the {role} ({run}): {w}" for w in result.get("warnings", [])]
    if result["steps"] < MIN_MODEL_STEPS:
        found.append(f"the {role} ({run}) trained only {result['steps']} steps, fewer than {MIN_MODEL_STEPS}: "
                     "what it selects says little")
    return found


def _claim(fd: int, lock_path: Path) -> str | None:
    """Take the lock in `fd`, or say who holds it.

    On this machine the kernel's flock decides: it is dropped when its holder dies, however it
    dies, so a lock left by a dead process is free. The record ("PID HOST") names the holder;
    one naming another machine, whose processes this one cannot see (and whose flock may not
    reach here over a network file system), is honoured until it is removed.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(fd)
    record = _record(fd)
    if record and record[1] != socket.gethostname():
        fcntl.flock(fd, fcntl.LOCK_UN)
        return (f"{_holder(fd)} (another machine: if that process is gone, delete {lock_path})")
    return None


def _record(fd: int) -> tuple[str, str] | None:
    parts = os.pread(fd, 256, 0).decode(errors="replace").split()
    return (parts[0], parts[1] if len(parts) > 1 else socket.gethostname()) if parts else None


def _holder(fd: int) -> str:
    record = _record(fd)
    return f"pid {record[0]} on host {record[1]}" if record else "another process"


def live_holder(path: str | os.PathLike) -> str | None:
    """Who is training in the run directory `path` now, or None if nobody is."""
    lock_path = Path(path) / LOCK
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        return _claim(fd, lock_path)
    finally:
        os.close(fd)  # drops the flock if we took it


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".sha256")


@dataclass(frozen=True)
class RunDir:
    path: Path

    config = property(lambda self: self.path / "config.toml")
    throughput = property(lambda self: self.path / "throughput.json")
    budget = property(lambda self: self.path / "budget.json")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    tensorboard = property(lambda self: self.path / "tb")
    checkpoints = property(lambda self: self.path / "checkpoints")
    result = property(lambda self: self.path / "result.json")
    mix = property(lambda self: self.path / "mix.json")

    @staticmethod
    def check_replaceable(path: str | os.PathLike, force: bool) -> None:
        """An existing non-empty run directory is refused unless `force`; one a live process
        is training in is refused always (`force` replaces a finished or abandoned run)."""
        path = Path(path)
        if not (path.is_dir() and any(path.iterdir())):
            return
        if not force:
            raise UserError(f"Run directory {path} already exists; pass --force to replace it or --resume to continue it.")
        holder = live_holder(path)
        if holder:
            raise UserError(f"Run directory {path} is being trained by {holder}; --force replaces a finished or "
                            "abandoned run, never a live one.")

    @classmethod
    def create(cls, path: str | os.PathLike, force: bool) -> "RunDir":
        """A fresh run directory where `check_replaceable` allows one."""
        path = Path(path)
        cls.check_replaceable(path, force)
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "RunDir":
        path = Path(path)
        if not (path / "config.toml").is_file():
            raise UserError(f"{path} is not a run directory (no config.toml).")
        return cls(path)

    def write_config(self, cfg: RunConfig) -> None:
        atomic_write_text(self.config, to_toml(cfg))

    def read_config(self) -> RunConfig:
        return load_run_config(self.config)

    def log(self, record: dict[str, Any]) -> None:
        """Append one metrics line; a line is one write, so a crash leaves whole lines behind."""
        with self.metrics.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.exists():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """last.pt (+ .sha256) replaces the old one, which stays as previous.pt until then.

        The bytes are written and fsynced under a temporary name first: a full disk or a kill
        at any moment leaves either the old last.pt or the new one, and previous.pt intact.
        """
        self.checkpoints.mkdir(exist_ok=True)
        buf = io.BytesIO()
        torch.save(state, buf)
        data = buf.getvalue()
        incoming = self.checkpoints / "incoming.pt"
        try:
            atomic_write_bytes(incoming, data)
        except UserError as e:  # the atomic writer's sentence names the file and the OSError
            raise UserError(f"Could not write a checkpoint: {str(e).rstrip('.')}; the previous checkpoint is "
                            "intact.") from None
        last, previous = self.checkpoints / "last.pt", self.checkpoints / "previous.pt"
        if last.exists():
            os.replace(last, previous)
            if _sidecar(last).exists():
                os.replace(_sidecar(last), _sidecar(previous))
        os.replace(incoming, last)
        atomic_write_text(_sidecar(last), hashlib.sha256(data).hexdigest() + "\n")

    def load_checkpoint(self) -> dict[str, Any]:
        """The newest checkpoint whose checksum holds."""
        return self.restore_checkpoint()[0]

    def restore_checkpoint(self) -> tuple[dict[str, Any], str | None]:
        """The newest checkpoint whose checksum holds, and a warning if an older one had to serve."""
        skipped = []
        for name in ("last.pt", "previous.pt"):
            path = self.checkpoints / name
            if not path.exists():
                continue
            data = path.read_bytes()
            sidecar = _sidecar(path)
            if not sidecar.exists() or sidecar.read_text().strip() != hashlib.sha256(data).hexdigest():
                skipped.append(name)
                continue
            # our own file, checksum verified: the loader state holds numpy arrays, so not weights_only
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
            warning = f"{', '.join(skipped)} failed its checksum; resumed from {name}" if skipped else None
            return state, warning
        if skipped:
            raise UserError(f"Every checkpoint of {self.path} failed its checksum ({', '.join(skipped)}).")
        raise UserError(f"Run {self.path} has no checkpoint.")

    def truncate_metrics(self, step: int) -> None:
        """Drop log lines after `step`, so a resumed run's log reads like an uninterrupted one."""
        kept = [m for m in self.read_metrics() if m["step"] <= step]
        atomic_write_text(self.metrics, "".join(json.dumps(m) + "\n" for m in kept))

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Refuse a second process in this run directory (see `_claim`); the record is cleared
        on the way out, so only a process that died leaves one behind."""
        lock_path = self.path / LOCK
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            holder = _claim(fd, lock_path)
            if holder:
                raise UserError(f"Run directory {self.path} is in use by {holder}.")
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)

    def write_json(self, path: Path, obj: Any) -> None:
        atomic_write_json(path, obj)

    def read_json(self, path: Path, what: str) -> Any:
        return read_json(path, what)
