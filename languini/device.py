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


def autocast_dtype(dev: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA, plain fp32 on CPU (CPU bf16 is slower than fp32 on most parts)."""
    return torch.bfloat16 if dev.type == "cuda" else None


def dtype_name(dev: torch.device) -> str:
    dt = autocast_dtype(dev)
    return "float32" if dt is None else f"autocast-{str(dt).removeprefix('torch.')}"


def autocast(dev: torch.device) -> ContextManager:
    dt = autocast_dtype(dev)
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
