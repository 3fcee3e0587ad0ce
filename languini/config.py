"""Training and run configuration: dataclasses, TOML in and out, unknown keys are errors."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from languini.device import PRECISIONS
from languini.errors import UserError
from languini.family import make_dataclass_strict
from languini.io import read_toml, toml_table


@dataclass
class TrainConfig:
    """How to spend a budget. The budget itself (how many steps) comes from the compute class."""

    batch_size: int = 16  # global batch in sequences: fixed by the certificate, not by memory
    micro_batch_size: int | None = None  # gradient accumulation when the batch does not fit
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio on the last budgeted step
    warmup_steps: int = 100  # capped at a tenth of the run for short budgets
    weight_decay: float = 0.1  # AdamW's, on matrices; 0 makes it Adam
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 1e-8
    grad_clip: float = 1.0  # max gradient norm; 0 turns clipping off
    precision: str = "auto"  # auto (fp16 + gradient scaler on CUDA, fp32 elsewhere) | fp16 | bf16 | fp32
    seed: int = 0
    eval_every: int = 0  # steps between validations; 0 means about ten per run
    eval_tokens: int = 65536  # validation tokens per periodic check (the test is always whole)
    eval_stride: int | None = None  # GPT evaluation window stride; None means seq_len // 4
    log_every: int = 10
    device: str = "auto"
    compile: bool = False
    checkpoint_every: str = "10m"  # minutes ("10m") or steps ("500") between checkpoints

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UserError(f"Unknown precision '{self.precision}' (use {', '.join(PRECISIONS)}).")
        every = self.checkpoint_every.removesuffix("m")
        if not every.replace(".", "", 1).isdigit() or float(every) <= 0:
            raise UserError(f"checkpoint_every takes steps like 500 or minutes like 10m, got '{self.checkpoint_every}'.")

    def micro(self) -> int:
        m = self.micro_batch_size or self.batch_size
        if m < 1 or self.batch_size % m:
            raise UserError(f"The batch size {self.batch_size} is not a multiple of the micro-batch size {m}.")
        return m


def train_config(defaults: dict[str, Any], overrides: dict[str, Any]) -> TrainConfig:
    """Family defaults from configs.toml, then the command line's explicit options on top."""
    values = dict(defaults)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return make_dataclass_strict(TrainConfig, values, "training config")


@dataclass
class RunConfig:
    """What a run directory's config.toml holds: enough to rebuild the model and the data."""

    family: str
    config_name: str
    compute_class: str
    data: str
    data_fingerprint: str
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


def to_toml(cfg: RunConfig) -> str:
    """Flat keys, then [model] and [train]; None values are left out (TOML has no null)."""
    return toml_table(dataclasses.asdict(cfg))


def load_run_config(path: Path) -> RunConfig:
    return make_dataclass_strict(RunConfig, read_toml(path, "Run config"), str(path))
