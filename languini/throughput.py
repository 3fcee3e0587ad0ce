"""The throughput measurement: tokens/s of a full training step, written as a certificate.

A step is what training does: forward, loss, backward (with the same gradient accumulation),
gradient clipping and the optimizer step, on random tokens, under the same device, dtype and
compile settings. Warm-up steps run untimed (compilation, autotuning, allocator growth
happen there); each timed step is synchronised with the device and the median is reported.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from typing import Any

import torch
from tqdm import tqdm

from languini import __version__
from languini import device as devices
from languini.config import TrainConfig
from languini.family import Family, config_hash

CERTIFICATE_SCHEMA = 1


def software_versions() -> dict[str, str | None]:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {"languini": __version__, "torch": torch.__version__, "triton": triton_version}


def measure(family: Family, config_name: str, model_cfg: Any, tcfg: TrainConfig, warmup: int = 3,
            steps: int = 10, progress: bool = True) -> dict[str, Any]:
    from languini.trainer import Trainable  # the same step training runs

    if warmup < 0 or steps < 1:
        raise ValueError("warmup must be >= 0 and steps >= 1")
    dev = devices.resolve(tcfg.device)
    torch.manual_seed(tcfg.seed)
    trainable = Trainable.build(family, model_cfg, tcfg, dev)
    B, T = tcfg.batch_size, model_cfg.seq_len
    gen = torch.Generator().manual_seed(tcfg.seed)
    x = torch.randint(0, model_cfg.vocab_size, (B, T), generator=gen)
    y = torch.randint(0, model_cfg.vocab_size, (B, T), generator=gen)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times: list[float] = []
    bar = tqdm(total=warmup + steps, desc="throughput", disable=not progress, leave=False)
    for i in range(warmup + steps):
        devices.synchronize(dev)
        t0 = time.perf_counter()
        trainable.step(x, y, lr=tcfg.lr).item()  # .item() waits for the step to finish
        devices.synchronize(dev)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        bar.update()
    bar.close()
    median = statistics.median(times)
    model = trainable.model
    return {
        "schema": CERTIFICATE_SCHEMA,
        "model": family.name,
        "config": config_name,
        "model_config": vars(model_cfg).copy(),
        "config_hash": config_hash(model_cfg),
        "params": model.num_params(),
        "implementation": getattr(model, "scan_impl", None),
        "device": devices.name(dev),
        "device_type": dev.type,
        **software_versions(),
        "batch_size": B,
        "micro_batch_size": tcfg.micro(),
        "seq_len": T,
        "dtype": devices.dtype_name(dev),
        "compile": tcfg.compile,
        "warmup_steps": warmup,
        "measured_steps": steps,
        "step_times": times,
        "step_time_median": median,
        "tokens_per_second": B * T / median,
        "flops_per_token": model.flops_per_token(T),
        "peak_memory_bytes": devices.peak_memory_bytes(dev),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
