"""Which device to run on, what it is called, and the dtype policy for it.

Training, throughput measurement and evaluation must agree on all three, or the certificate
measures something other than what is trained.
"""

from __future__ import annotations

import contextlib
import platform
from typing import ContextManager

import torch

from languini.errors import UserError


def resolve(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"Unknown device '{device}' (use auto, cpu, cuda or cuda:N).") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("CUDA was asked for but no CUDA device is available.")
    return dev


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def name(dev: torch.device) -> str:
    """A human-readable device name; for CPUs it includes the thread count, which sets speed."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"{_cpu_model()} ({torch.get_num_threads()} threads)"


PRECISIONS = ("auto", "fp16", "bf16", "fp32")
_AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}


def training_precision(precision: str, dev: torch.device) -> str:
    """What a training step computes in. "auto" is fp16 autocast with a gradient scaler on CUDA,
    the precision Languini Kitchen's RTX 3090 reference throughputs were measured in, so a
    budget bought with them buys the same arithmetic; fp32 elsewhere (CPU half precision is
    slower than fp32 on most parts). An explicit choice stands on any device."""
    if precision not in PRECISIONS:
        raise UserError(f"Unknown precision '{precision}' (use {', '.join(PRECISIONS)}).")
    if precision != "auto":
        return precision
    return "fp16" if dev.type == "cuda" else "fp32"


def autocast_dtype(dev: torch.device, precision: str | None = None) -> torch.dtype | None:
    """The autocast dtype of a training precision; None (code that runs no gradient scaler:
    evaluation, DoReMi's proxy) gets bf16 on CUDA, whose range needs no scaler, fp32 elsewhere."""
    if precision is None:
        return torch.bfloat16 if dev.type == "cuda" else None
    return _AUTOCAST[training_precision(precision, dev)]


def dtype_name(dev: torch.device, precision: str | None = None) -> str:
    dt = autocast_dtype(dev, precision)
    return "float32" if dt is None else f"autocast-{str(dt).removeprefix('torch.')}"


def precision_of_dtype_name(name: str | None) -> str | None:
    """The precision a certificate's `dtype` names: certificates written before they recorded
    `precision` are read through it."""
    return {"float32": "fp32", "autocast-bfloat16": "bf16", "autocast-float16": "fp16"}.get(name or "")


def autocast(dev: torch.device, precision: str | None = None) -> ContextManager:
    dt = autocast_dtype(dev, precision)
    if dt is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=dev.type, dtype=dt)


def synchronize(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def peak_memory_bytes(dev: torch.device) -> int | None:
    """Peak allocated device memory on CUDA; the process's peak RSS on CPU."""
    if dev.type == "cuda":
        return int(torch.cuda.max_memory_allocated(dev))
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except (ImportError, OSError):
        return None
