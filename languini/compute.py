"""Compute classes and the one budget function.

A compute class is hours on a named reference accelerator. The budget is what the model
could train in those hours on the reference:
    reference_tokens_per_second = measured_tokens_per_second * device_factor
    tokens = floor(reference_tokens_per_second * hours * 3600)
    steps  = tokens // (batch_size * seq_len)
The device factor is yardstick tokens/s on the reference ÷ on the measuring device; it is 1
when the measuring device is the reference (or the class's reference is "local"). Every input
of the conversion is returned, so the run can write it down.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from languini.errors import UserError

LOCAL = "local"


@dataclass(frozen=True)
class ComputeClass:
    name: str
    hours: float
    reference: str


def classes_dir() -> Path:
    """`compute_classes/` of this checkout, or $LANGUINI_CLASSES_DIR."""
    env = os.environ.get("LANGUINI_CLASSES_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "compute_classes"


def load_classes(directory: Path | None = None) -> dict[str, ComputeClass]:
    directory = directory or classes_dir()
    found: dict[str, ComputeClass] = {}
    for path in sorted(directory.glob("*.toml")):
        if path.name == "devices.toml":
            continue
        with path.open("rb") as f:
            table = tomllib.load(f)
        for entry in table.get("class", []):
            c = ComputeClass(name=str(entry["name"]), hours=float(entry["hours"]), reference=str(entry["reference"]))
            if c.name in found:
                raise UserError(f"Compute class '{c.name}' is defined twice (second time in {path}).")
            if not c.hours > 0:
                raise UserError(f"Compute class '{c.name}' in {path} has non-positive hours.")
            found[c.name] = c
    return found


def get_class(name: str) -> ComputeClass:
    classes = load_classes()
    if name not in classes:
        raise UserError(f"Unknown compute class '{name}' (known: {', '.join(classes)}).")
    return classes[name]


@dataclass(frozen=True)
class Budget:
    compute_class: str
    hours: float
    reference: str
    tokens_per_second: float
    device: str
    device_factor: float
    reference_tokens_per_second: float
    batch_size: int
    seq_len: int
    tokens: int
    steps: int
    tokens_trained: int
    reference_hours: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def device_factor_for(cls: ComputeClass, device: str, given: float | None) -> float:
    """The factor that turns local tokens/s into reference tokens/s, or a clear refusal."""
    if given is not None:
        if not (given > 0 and math.isfinite(given)):
            raise UserError(f"The device factor must be a positive number, got {given}.")
        return float(given)
    if cls.reference == LOCAL or cls.reference.lower() in device.lower().replace(" ", ""):
        return 1.0
    raise UserError(
        f"Class '{cls.name}' is measured in hours on '{cls.reference}', but the throughput was "
        f"measured on '{device}'; pass --device-factor (reference yardstick tokens/s ÷ local)."
    )


def compute_budget(
    cls: ComputeClass,
    tokens_per_second: float,
    batch_size: int,
    seq_len: int,
    device: str,
    device_factor: float | None = None,
) -> Budget:
    if not (tokens_per_second > 0 and math.isfinite(tokens_per_second)):
        raise UserError(f"The measured throughput must be a positive number of tokens/s, got {tokens_per_second}.")
    if batch_size < 1 or seq_len < 1:
        raise UserError("Batch size and sequence length must be positive.")
    factor = device_factor_for(cls, device, device_factor)
    ref_tps = tokens_per_second * factor
    tokens = math.floor(ref_tps * cls.hours * 3600)
    steps = tokens // (batch_size * seq_len)
    if steps < 1:
        raise UserError(
            f"Class '{cls.name}' buys {tokens} tokens, less than one step of {batch_size}×{seq_len}; "
            "choose a larger class or a smaller batch."
        )
    trained = steps * batch_size * seq_len
    return Budget(
        compute_class=cls.name,
        hours=cls.hours,
        reference=cls.reference,
        tokens_per_second=tokens_per_second,
        device=device,
        device_factor=factor,
        reference_tokens_per_second=ref_tps,
        batch_size=batch_size,
        seq_len=seq_len,
        tokens=tokens,
        steps=steps,
        tokens_trained=trained,
        reference_hours=trained / ref_tps / 3600,
    )


def budget_from_certificate(cls: ComputeClass, cert: dict[str, Any], device_factor: float | None = None,
                            batch_size: int | None = None, seq_len: int | None = None) -> Budget:
    """The budget a throughput certificate buys: what training and the submission check call."""
    try:
        return compute_budget(
            cls,
            tokens_per_second=float(cert["tokens_per_second"]),
            batch_size=int(batch_size or cert["batch_size"]),
            seq_len=int(seq_len or cert["seq_len"]),
            device=str(cert["device"]),
            device_factor=device_factor,
        )
    except KeyError as e:
        raise UserError(f"The throughput certificate lacks the key {e}.") from None
