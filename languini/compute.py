"""Compute classes, devices, and the one budget function.

A compute class is hours on a named reference accelerator (or, as a second, device-free
mode, a number of training FLOPs). The budget is what the model could train in those hours
on the reference:
    reference_tokens_per_second = measured_tokens_per_second * device_factor
    tokens = floor(reference_tokens_per_second * hours * 3600)
    steps  = tokens // (batch_size * seq_len)
The device factor is yardstick tokens/s on the reference ÷ on the measuring device
(`languini calibrate`); it is 1 on the reference itself and for classes whose reference is
"local". FLOP classes buy tokens = floor(FLOPs / (6 · parameters)) (DCLM style). Every input
of the conversion is returned, so the run writes it down.

A budget can be charged: compute spent before training for the run's sake (a data-selection
model's, say) comes out of the class's hours or FLOPs first, and the charge is part of the
budget, so the submission check and a resume recompute the same numbers.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from languini.device import precision_of_dtype_name
from languini.errors import UserError
from languini.io import read_toml
from languini import packaged

LOCAL = "local"
FLOPS = "flops"


@dataclass(frozen=True)
class ComputeClass:
    name: str
    hours: float | None
    reference: str  # a device key of devices.toml, "local", or "flops"
    flops: float | None = None

    @property
    def uses_throughput(self) -> bool:
        """Whether the measured tokens/s sets the budget (hours do; FLOPs buy tokens by parameters)."""
        return self.reference != FLOPS


def classes_dir() -> Path:
    """$LANGUINI_CLASSES_DIR (a folder of the user's class files), else the shipped `compute_classes/`."""
    env = os.environ.get("LANGUINI_CLASSES_DIR")
    return Path(env) if env else packaged.data_dir("compute_classes")


def _parse_class(entry: dict[str, Any], path: Path) -> ComputeClass:
    name = str(entry.get("name", ""))
    if ("hours" in entry) == ("flops" in entry):
        raise UserError(f"Compute class '{name}' in {path} needs exactly one of 'hours' or 'flops'.")
    amount = float(entry.get("hours", entry.get("flops", 0)))
    if not (amount > 0 and math.isfinite(amount)):
        raise UserError(f"Compute class '{name}' in {path} has a non-positive size.")
    if "flops" in entry:
        return ComputeClass(name=name, hours=None, reference=FLOPS, flops=amount)
    return ComputeClass(name=name, hours=amount, reference=str(entry["reference"]))


def load_classes(directory: Path | None = None) -> dict[str, ComputeClass]:
    directory = directory or classes_dir()
    found: dict[str, ComputeClass] = {}
    for path in sorted(directory.glob("*.toml")):
        if path.name == "devices.toml":
            continue
        for entry in read_toml(path, "Compute classes").get("class", []):
            c = _parse_class(entry, path)
            if c.name in found:
                raise UserError(f"Compute class '{c.name}' is defined twice (second time in {path}).")
            found[c.name] = c
    return found


def get_class(name: str) -> ComputeClass:
    classes = load_classes()
    if name not in classes:
        raise UserError(f"Unknown compute class '{name}' (known: {', '.join(classes)}).")
    return classes[name]


def load_devices() -> dict[str, dict[str, Any]]:
    path = classes_dir() / "devices.toml"
    return read_toml(path, "Compute classes") if path.exists() else {}


def find_device(device_name: str) -> tuple[str, dict[str, Any]] | None:
    """The devices.toml entry whose `names` match a torch device name, if any."""
    lowered = device_name.lower()
    for key, entry in load_devices().items():
        if any(n.lower() in lowered for n in entry.get("names", [])):
            return key, entry
    return None


def reference_yardstick(reference: str, config: str) -> float:
    entry = load_devices().get(reference)
    if entry is None:
        raise UserError(f"Reference device '{reference}' is not in devices.toml.")
    table = entry.get("yardstick", {})
    if config not in table:
        raise UserError(f"devices.toml has no yardstick for GPT '{config}' on '{reference}' "
                        f"(has: {', '.join(table) or 'none'}).")
    return float(table[config])


@dataclass(frozen=True)
class Charge:
    """Compute spent before training for a run's sake, to come out of its class first.

    An hours class takes `hours` (which must be hours on its own `reference`), a FLOP class
    takes `flops`; either may be None where unknown, and then cannot be charged. `source` says
    what was spent, for the sentences that refuse or report it. `charged` is what a budget took,
    in its class's unit: None until `compute_budget` applies the charge.
    """

    hours: float | None
    flops: float | None
    reference: str | None
    source: str
    charged: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """budget.json's `charge` (and result.json's `budget_charge`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "Charge | None":
        """A charge as a budget.json recorded it (None: the budget was not charged)."""
        if not d:
            return None
        if not isinstance(d, dict):
            raise UserError(f"A budget's charge must be a table of hours, flops, reference and source, got {d!r}.")
        return cls(hours=d.get("hours"), flops=d.get("flops"), reference=d.get("reference"),
                   source=str(d.get("source", "the charge")), charged=d.get("charged"))


@dataclass(frozen=True)
class Budget:
    compute_class: str
    mode: str  # "reference" | "local" | "calibrated" | "flops"
    hours: float | None
    flops: float | None
    reference: str
    tokens_per_second: float
    device: str
    device_factor: float
    calibration: dict[str, Any] | None
    reference_tokens_per_second: float
    params: int | None
    batch_size: int
    seq_len: int
    tokens: int
    steps: int
    tokens_trained: int
    reference_hours: float | None
    charge: Charge | None = None  # applied: its `charged` is what came out of the class
    precision: str | None = None  # what the certificate measured (fp16 | bf16 | fp32): what training runs in

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def certificate_precision(measured: dict[str, Any]) -> str | None:
    """fp16, bf16 or fp32: what a certificate (or a calibration's yardstick) was measured in;
    read from its `dtype` where it predates the `precision` key."""
    return measured.get("precision") or precision_of_dtype_name(measured.get("dtype"))


def _device_factor(cls: ComputeClass, device: str, calibration: dict[str, Any] | None,
                   precision: str | None) -> tuple[float, str]:
    """The factor that turns local tokens/s into reference tokens/s, and the budget's mode."""
    if calibration is not None and cls.reference == LOCAL:
        raise UserError(f"Class '{cls.name}' counts hours on the measuring machine itself (local): there is no other "
                        "device to convert to, so it takes no device factor or calibration.")
    if calibration is not None:
        factor = calibration.get("device_factor")
        if not (isinstance(factor, (int, float)) and factor > 0 and math.isfinite(factor)):
            raise UserError(f"The device factor must be a positive number, got {factor}.")
        timed = certificate_precision(calibration.get("yardstick") or {})
        if timed and precision and timed != precision:
            raise UserError(f"The calibration timed its yardstick in {timed}, the throughput was measured in "
                            f"{precision}: calibrate with --precision {precision}.")
        ref = calibration.get("reference")
        if ref is not None and ref != cls.reference:
            raise UserError(f"The calibration is against '{ref}', but class '{cls.name}' is on '{cls.reference}'.")
        return float(factor), "calibrated"
    if cls.reference == LOCAL:
        return 1.0, "local"
    found = find_device(device)
    if found and found[0] == cls.reference:
        return 1.0, "reference"
    raise UserError(
        f"Class '{cls.name}' is measured in hours on '{cls.reference}', but the throughput was measured on "
        f"'{device}'; run `languini calibrate` and pass --calibration (or --device-factor)."
    )


def charged_amount(cls: ComputeClass, charge: Charge) -> float:
    """What a charge takes from `cls`, in its unit (hours, or FLOPs for a FLOP class)."""
    flop_class = cls.reference == FLOPS
    unit_name = "FLOPs" if flop_class else "hours"
    spent, source = (charge.flops if flop_class else charge.hours), charge.source
    at_start = source[:1].upper() + source[1:]
    if spent is None:
        raise UserError(f"The {unit_name} of {source} are unknown, so they cannot be charged to class '{cls.name}'.")
    if not flop_class and charge.reference != cls.reference:
        raise UserError(f"{at_start} cost hours on '{charge.reference}', class '{cls.name}' counts hours on "
                        f"'{cls.reference}'; they cannot be subtracted.")
    spent = float(spent)
    if not (spent >= 0 and math.isfinite(spent)):
        raise UserError(f"The charge of {source} must be a non-negative number, got {spent}.")
    if not spent < (cls.flops if flop_class else cls.hours):
        raise UserError(f"{at_start} cost {spent:.4g} {unit_name}, all of class '{cls.name}' and more: charged, nothing "
                        "is left to train.")
    return spent


def compute_budget(cls: ComputeClass, tokens_per_second: float, batch_size: int, seq_len: int, device: str,
                   calibration: dict[str, Any] | None = None, params: int | None = None,
                   charge: Charge | None = None, precision: str | None = None) -> Budget:
    if not (tokens_per_second > 0 and math.isfinite(tokens_per_second)):
        raise UserError(f"The measured throughput must be a positive number of tokens/s, got {tokens_per_second}.")
    if batch_size < 1 or seq_len < 1:
        raise UserError("Batch size and sequence length must be positive.")
    spent = charged_amount(cls, charge) if charge else 0.0
    if cls.reference == FLOPS:
        if calibration is not None:
            raise UserError(f"Class '{cls.name}' counts FLOPs, the same on every device: it takes no device factor "
                            "or calibration.")
        if not params:
            raise UserError(f"FLOP class '{cls.name}' needs the model's parameter count.")
        factor, mode, ref_tps = 1.0, FLOPS, tokens_per_second
        tokens = math.floor((cls.flops - spent) / (6 * params))
    else:
        factor, mode = _device_factor(cls, device, calibration, precision)
        ref_tps = tokens_per_second * factor
        tokens = math.floor(ref_tps * (cls.hours - spent) * 3600)
    steps = tokens // (batch_size * seq_len)
    if steps < 1:
        raise UserError(f"Class '{cls.name}' buys {tokens} tokens, less than one step of {batch_size}×{seq_len}; "
                        "choose a larger class or a smaller batch.")
    trained = steps * batch_size * seq_len
    return Budget(
        compute_class=cls.name, mode=mode, hours=cls.hours, flops=cls.flops, reference=cls.reference,
        tokens_per_second=tokens_per_second, device=device, device_factor=factor, calibration=calibration,
        reference_tokens_per_second=ref_tps, params=params, batch_size=batch_size, seq_len=seq_len,
        tokens=tokens, steps=steps, tokens_trained=trained,
        reference_hours=None if mode == FLOPS else trained / ref_tps / 3600,
        charge=replace(charge, charged=spent) if charge else None, precision=precision,
    )


def trained_compute(result: dict[str, Any]) -> tuple[float, str]:
    """What a finished run trained, in its class's unit: reference-hours, or for a FLOP class
    (which has no hours) its training FLOPs, 6 × parameters × tokens, the rule its budget came
    from. Raises KeyError/TypeError on a result without these fields."""
    if result.get("budget_mode") == FLOPS:
        return 6 * float(result["params"]) * float(result["tokens_trained"]), "FLOPs"
    return float(result["reference_hours"]), "reference-hours"


def factor_as_calibration(device_factor: float | None) -> dict[str, Any] | None:
    """A bare --device-factor, recorded in the same shape as a calibration file."""
    if device_factor is None:
        return None
    return {"device_factor": device_factor, "source": "given on the command line"}


def budget_from_certificate(cls: ComputeClass, cert: dict[str, Any], calibration: dict[str, Any] | None = None,
                            batch_size: int | None = None, seq_len: int | None = None,
                            charge: Charge | None = None) -> Budget:
    """The budget a throughput certificate buys: what training and the submission check call."""
    try:
        return compute_budget(
            cls,
            tokens_per_second=float(cert["tokens_per_second"]),
            batch_size=int(cert["batch_size"] if batch_size is None else batch_size),
            seq_len=int(cert["seq_len"] if seq_len is None else seq_len),
            device=str(cert["device"]),
            calibration=calibration,
            params=int(cert["params"]) if "params" in cert else None,
            charge=charge,
            precision=certificate_precision(cert),
        )
    except KeyError as e:
        raise UserError(f"The throughput certificate lacks the key {e}.") from None
    except (TypeError, ValueError):
        raise UserError("The throughput certificate holds a malformed number.") from None
