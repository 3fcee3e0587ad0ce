"""The run directory: what is written where, always atomically.

    RUN/config.toml       family, size, model and training config, data, compute class
    RUN/throughput.json   the throughput certificate the budget came from
    RUN/budget.json       the budget and every input of its arithmetic
    RUN/mix.json          the data mix (normalised weights), when trained with --mix
    RUN/metrics.jsonl     one JSON object per logged step or validation
    RUN/tb/               TensorBoard events
    RUN/checkpoints/      last.pt (and previous.pt, kept until a new last.pt is complete)
    RUN/result.json       the schema-versioned result, written last: its presence means done
"""

from __future__ import annotations

import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from languini.config import RunConfig, load_run_config, to_toml
from languini.errors import UserError
from languini.io import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json

RESULT_SCHEMA = 1


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

    @classmethod
    def create(cls, path: str | os.PathLike, force: bool) -> "RunDir":
        """A fresh run directory; an existing non-empty one is refused unless `force`."""
        path = Path(path)
        if path.exists() and any(path.iterdir()):
            if not force:
                raise UserError(f"Run directory {path} already exists; pass --force to replace it.")
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
        """Write last.pt atomically, keeping the old last.pt as previous.pt until then."""
        self.checkpoints.mkdir(exist_ok=True)
        buf = io.BytesIO()
        torch.save(state, buf)
        last, previous = self.checkpoints / "last.pt", self.checkpoints / "previous.pt"
        if last.exists():
            os.replace(last, previous)
        atomic_write_bytes(last, buf.getvalue())

    def load_checkpoint(self) -> dict[str, Any]:
        last = self.checkpoints / "last.pt"
        if not last.exists():
            raise UserError(f"Run {self.path} has no checkpoint; did its training finish?")
        return torch.load(last, map_location="cpu", weights_only=True)

    def write_json(self, path: Path, obj: Any) -> None:
        atomic_write_json(path, obj)

    def read_json(self, path: Path, what: str) -> Any:
        return read_json(path, what)
