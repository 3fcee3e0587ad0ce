"""Shared bits of the benchmark scripts: where results go and how a machine is described."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from languini.io import atomic_write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    import torch

    from languini import device as devices

    dev = devices.resolve("auto")
    return {
        "device": devices.name(dev),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_result(name: str, payload: dict) -> Path:
    path = RESULTS / f"{name}.json"
    atomic_write_json(path, {"machine": machine(), **payload})
    return path
