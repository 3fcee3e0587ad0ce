"""The run directory: what is written where, always atomically.

    RUN/config.toml       family, size, model and training config, data, compute class
    RUN/throughput.json   the throughput certificate the budget came from
    RUN/budget.json       the budget and every input of its arithmetic
    RUN/mix.json          the data mix (normalised weights), when trained with --mix
    RUN/metrics.jsonl     one JSON object per logged step or validation
    RUN/tb/               TensorBoard events
    RUN/checkpoints/      last.pt and previous.pt, each with a .sha256 beside it
    RUN/.lock             held by the process training in the directory ("PID HOST" inside)
    RUN/result.json       the schema-versioned result (`RunResult`), written last: its presence means done

This module is also the one place that reads and writes result.json (`RunResult`) and the one
way to rebuild a run's model (`build_run_model` from its config, `load_run_model` with its
weights and data), so that every reader refuses the same things in the same words.
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
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from languini import device as devices
from languini.config import RunConfig, load_run_config, to_toml
from languini.data.loader import PreparedData
from languini.errors import UserError
from languini.family import Family, load_family, make_dataclass_strict
from languini.io import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json

RESULT_SCHEMA = 1
LOCK = ".lock"
MIN_MODEL_STEPS = 300
"""Steps below which a selection's proxy or reference model has barely started to learn: its
scores or weights are reported, with a warning."""


@dataclass(kw_only=True)
class RunResult:
    """A finished run's result.json, typed: what the leaderboard, fits, verification and data
    selection read. The keys (and their order) are those the trainer has always written, so every
    existing run reads; keys added after the first runs have defaults, and keys this version does
    not know are kept in `extra` and written back, so reading and writing loses nothing."""

    schema: int = RESULT_SCHEMA
    family: str
    config: str
    model_config: dict[str, Any]
    params: int
    compute_class: str
    reference: str
    device: str
    device_factor: float
    budget_mode: str | None = None
    budget_tokens: int
    steps: int
    tokens_trained: int
    reference_hours: float | None
    budget_charge: dict[str, Any] | None = None  # budget.json's charge: a selection paid from the budget
    wall_seconds: float
    train_tokens_per_second: float
    data_wait_fraction: float
    epochs: float
    final_train_loss: float
    implementation: str | None
    data: dict[str, Any]  # path and fingerprint of the data trained on
    mix: str
    mix_details: dict[str, Any] | None = None
    test: dict[str, Any]  # evaluate's metrics of the test split, with by_domain and protocol
    unigram_bits_per_byte: float
    evaluation_identity: str | None = None  # absent where the test was not scored under the fixed protocol
    dataset: str | None = None
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, obj: Any, where: str | os.PathLike) -> "RunResult":
        """Check the schema and the keys every result has; `where` names the file in the refusal."""
        if not isinstance(obj, dict):
            raise UserError(f"{where} is not a run result (it holds no JSON object).")
        schema = obj.get("schema")
        if schema is None:
            raise UserError(f"{where} names no schema: it is not a result.json written by languini.")
        if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
            raise UserError(f"{where} has the unknown schema {schema!r}; this languini reads schema {RESULT_SCHEMA}.")
        if schema > RESULT_SCHEMA:
            raise UserError(f"{where} has schema {schema}, newer than the {RESULT_SCHEMA} this languini reads; "
                            "upgrade languini to read it.")
        known = {f.name for f in fields(cls)} - {"extra"}
        missing = [f.name for f in fields(cls) if f.name in _REQUIRED and f.name not in obj]
        if missing:
            raise UserError(f"{where} lacks {', '.join(missing)}: it is not a finished run's result.")
        for name in ("test", "data"):
            if not isinstance(obj[name], dict):
                raise UserError(f"{where} holds no {name} table (its '{name}' is {type(obj[name]).__name__}).")
        return cls(**{k: v for k, v in obj.items() if k in known},
                   extra={k: v for k, v in obj.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        """result.json's object, keys in the order the trainer writes them."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        for key in ("evaluation_identity", "dataset"):  # evaluate leaves both out off the fixed protocol
            if out[key] is None:
                del out[key]
        return {**out, **self.extra}

    @classmethod
    def read(cls, path: str | os.PathLike) -> "RunResult":
        return cls.from_dict(read_json(path, "Run result"), path)

    def write(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_dict())

    def warnings_for(self, warmup_steps: int) -> list[str]:
        """Why a finished run's numbers may not mean anything (result.json's `warnings`)."""
        found = []
        if self.steps < warmup_steps:
            found.append(f"the run trained {self.steps} steps, fewer than its {warmup_steps}-step warm-up: "
                         "too short to say anything about the model")
        test, unigram = self.test["bits_per_byte"], self.unigram_bits_per_byte
        if not test < unigram:
            found.append(f"test bits-per-byte {test:.4f} is not below the unigram baseline {unigram:.4f}: the model "
                         "predicts no better than token frequencies")
        return found


_REQUIRED = frozenset(f.name for f in fields(RunResult)
                      if f.default is MISSING and f.default_factory is MISSING)


def model_warnings(role: str, run: str | os.PathLike, steps: int, warnings: Sequence[str] = ()) -> list[str]:
    """Why a selection model (a proxy, a reference, an embedder) may not mean anything: its run's
    own `warnings`, and too few `steps`."""
    found = [f"the {role} ({run}): {w}" for w in warnings]
    if steps < MIN_MODEL_STEPS:
        found.append(f"the {role} ({run}) trained only {steps} steps, fewer than {MIN_MODEL_STEPS}: "
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

    def read_result(self) -> RunResult:
        return RunResult.read(self.result)


@dataclass(frozen=True)
class RunModel:
    """A finished run's model in eval mode on its device, with the data it trained on."""

    run: RunDir
    family: str
    config: Any  # the family's model config
    model: torch.nn.Module
    data: PreparedData
    device: torch.device

    @property
    def seq_len(self) -> int:
        return self.config.seq_len


def build_run_model(cfg: RunConfig, where: str | os.PathLike) -> tuple[Family, Any, torch.nn.Module]:
    """The family, model config and untrained model that a run's config describes; `where`
    names the run in a refusal."""
    family = load_family(cfg.family)
    model_cfg = make_dataclass_strict(family.config_class, cfg.model, f"model config of {where}")
    return family, model_cfg, family.build(model_cfg)


def load_run_model(run_path: str | os.PathLike, device: str | torch.device = "auto",
                   data: PreparedData | None = None, weights: dict[str, torch.Tensor] | None = None) -> RunModel:
    """Rebuild a run's model from config.toml and its last checkpoint; refuse changed data.

    A reviewer re-scoring a submission bundle (which has no checkpoint, and names data on
    another machine) passes the bundle's `weights` and the `data` to score on instead; the
    caller then answers for that data being the right one."""
    run = RunDir.open(run_path)
    cfg = run.read_config()
    family, model_cfg, model = build_run_model(cfg, run.path)
    if data is None:
        data = PreparedData(cfg.data)
        if data.fingerprint != cfg.data_fingerprint:
            raise UserError(f"The data at {cfg.data} is not the data this run trained on (fingerprint differs).")
    dev = devices.resolve(str(device))
    try:
        model.load_state_dict(run.load_checkpoint()["model"] if weights is None else weights)
    except RuntimeError as e:
        raise UserError(f"The weights do not fit the model that {run.path}'s config builds ({e}).".replace("\n", " ")) from None
    return RunModel(run, family.name, model_cfg, model.to(dev).eval(), data, dev)
