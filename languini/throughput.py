"""The throughput measurement: tokens/s of a full training step, written as a certificate.

A step is what training does: forward, loss, backward (with the same gradient accumulation),
gradient clipping and the optimizer step, on random tokens, under the same device, dtype and
compile settings. Warm-up steps run untimed (compilation, autotuning, allocator growth
happen there); each timed step is synchronised with the device (CUDA events on GPU,
perf_counter on CPU) and the median is reported with its p10/p90 spread.

`sweep` grows the batch size until the device runs out of memory, each size in its own
subprocess so an out-of-memory error cannot poison the next measurement; the best batch size
sets the budget (Languini Kitchen's rule).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from languini import __version__
from languini import device as devices
from languini.compute import find_device
from languini.config import TrainConfig, train_config
from languini.errors import UserError
from languini.family import Family, config_hash, load_family

CERTIFICATE_SCHEMA = 1
OOM_EXIT = 3  # a sweep worker's exit status when the batch did not fit


def software_versions() -> dict[str, str | None]:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {"languini": __version__, "torch": torch.__version__, "triton": triton_version}


class _Timer:
    """Device-synchronised wall time of one step: CUDA events on GPU, perf_counter on CPU."""

    def __init__(self, dev: torch.device) -> None:
        self.dev = dev

    def __enter__(self) -> "_Timer":
        if self.dev.type == "cuda":
            self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.start.record()
        else:
            self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.dev.type == "cuda":
            self.end.record()
            self.end.synchronize()
            self.seconds = self.start.elapsed_time(self.end) / 1000
        else:
            self.seconds = time.perf_counter() - self.t0


def peak_flops(device_name: str) -> float | None:
    found = find_device(device_name)
    return float(found[1]["peak_flops"]) if found and "peak_flops" in found[1] else None


def measure(family: Family, config_name: str, model_cfg: Any, tcfg: TrainConfig, warmup: int = 3,
            steps: int = 10, progress: bool = True) -> dict[str, Any]:
    from languini.trainer import Trainable  # the same step training runs

    if warmup < 0 or steps < 1:
        raise UserError("Warm-up steps must be >= 0 and timed steps >= 1.")
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
    for i in tqdm(range(warmup + steps), desc="throughput", disable=not progress, leave=False):
        devices.synchronize(dev)
        with _Timer(dev) as timer:
            trainable.step(x, y, lr=tcfg.lr)
        if i >= warmup:
            times.append(timer.seconds)
    p10, median, p90 = (float(v) for v in np.percentile(times, [10, 50, 90]))
    model = trainable.model
    name = devices.name(dev)
    tps = B * T / median
    flops = model.flops_per_token(T)
    peak = peak_flops(name)
    return {
        "schema": CERTIFICATE_SCHEMA,
        "model": family.name,
        "config": config_name,
        "model_config": vars(model_cfg).copy(),
        "config_hash": config_hash(model_cfg),
        "params": model.num_params(),
        "implementation": getattr(model, "scan_impl", None),
        "device": name,
        "device_type": dev.type,
        **software_versions(),
        "batch_size": B,
        "micro_batch_size": tcfg.micro(),
        "seq_len": T,
        "dtype": devices.dtype_name(dev, trainable.precision),
        "precision": trainable.precision,
        "compile": tcfg.compile,
        "warmup_steps": warmup,
        "measured_steps": steps,
        "step_times": times,
        "step_time_median": median,
        "step_time_p10": p10,
        "step_time_p90": p90,
        "tokens_per_second": tps,
        "tokens_per_second_p10": B * T / p90,
        "tokens_per_second_p90": B * T / p10,
        "flops_per_token": flops,
        "peak_flops": peak,
        "mfu": tps * flops / peak if peak else None,
        "peak_memory_bytes": devices.peak_memory_bytes(dev),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def tokens_per_second_of(cert: dict[str, Any]) -> float:
    """The rate a certificate's own step times imply: a hand-edited rate does not match it."""
    return cert["batch_size"] * cert["seq_len"] / float(np.median(cert["step_times"]))


# --- the sweep --------------------------------------------------------------------------


def measure_request(request: dict[str, Any], progress: bool = False) -> dict[str, Any]:
    """Measure from a plain-data request: what a sweep worker receives."""
    family = load_family(request["family"])
    model_cfg, defaults = family.config(request["config"], **request.get("model_overrides", {}))
    tcfg = train_config(defaults, request.get("train_overrides", {}))
    return measure(family, request["config"], model_cfg, tcfg, request["warmup"], request["steps"], progress)


def _worker_env() -> dict[str, str]:
    """The child imports what the parent could: its sys.path travels as PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


def _run_worker(request: dict[str, Any]) -> dict[str, Any] | None:
    """A measurement in a fresh process; None when the batch ran out of memory."""
    proc = subprocess.run([sys.executable, "-m", "languini.throughput", json.dumps(request)],
                          capture_output=True, text=True, env=_worker_env())
    if proc.returncode == OOM_EXIT:
        return None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"The throughput measurement at batch size {request['train_overrides']['batch_size']} "
                        f"failed: {last}")
    return json.loads(proc.stdout)


def sweep(request: dict[str, Any], max_batch_size: int, progress: bool = True) -> dict[str, Any]:
    """Batch sizes 1, 2, 4, ... up to max_batch_size or out of memory; the best one certified."""
    if max_batch_size < 1:
        raise UserError("The sweep's maximum batch size must be at least 1.")
    rows: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    batch = 1
    bar = tqdm(desc="sweep", unit="batch size", disable=not progress, leave=False)
    while batch <= max_batch_size:
        overrides = {**request.get("train_overrides", {}), "batch_size": batch, "micro_batch_size": batch}
        cert = _run_worker({**request, "train_overrides": overrides})
        bar.update()
        if cert is None:
            rows.append({"batch_size": batch, "status": "out of memory"})
            break
        rows.append({"batch_size": batch, "status": "ok", "tokens_per_second": cert["tokens_per_second"],
                     "peak_memory_bytes": cert["peak_memory_bytes"]})
        if best is None or cert["tokens_per_second"] > best["tokens_per_second"]:
            best = cert
        batch *= 2
    bar.close()
    if best is None:
        raise UserError("Even a batch of one sequence ran out of memory.")
    return {**best, "sweep": rows, "best_batch_size": best["batch_size"]}


def _worker_main(argv: list[str]) -> int:
    try:
        cert = measure_request(json.loads(argv[0]))
    except torch.OutOfMemoryError:
        print("out of memory", file=sys.stderr)
        return OOM_EXIT
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(cert))
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))


def calibrate(reference: str, config: str, batch_size: int, device: str = "auto", compile: bool = False,
              warmup: int = 3, steps: int = 10, progress: bool = True, precision: str = "auto") -> dict[str, Any]:
    """Time the yardstick (a GPT training step at seq 512) here; the factor converts to `reference`.

    device_factor = yardstick tokens/s on the reference (devices.toml) ÷ measured here, so that
    local tokens/s × factor = what the reference would do. The yardstick is timed in the
    precision the certificates it converts are measured in (the budget refuses a mismatch).
    """
    from languini.compute import reference_yardstick

    ref_tps = reference_yardstick(reference, config)
    request = {"family": "gpt", "config": config, "warmup": warmup, "steps": steps,
               "train_overrides": {"batch_size": batch_size, "device": device, "compile": compile,
                                   "precision": precision}}
    cert = measure_request(request, progress)
    return {
        "schema": 1,
        "reference": reference,
        "device": cert["device"],
        "device_factor": ref_tps / cert["tokens_per_second"],
        "yardstick": {"family": "gpt", "config": config, "seq_len": cert["seq_len"], "batch_size": batch_size,
                      "dtype": cert["dtype"], "precision": cert["precision"], "compile": compile,
                      "reference_tokens_per_second": ref_tps, "local_tokens_per_second": cert["tokens_per_second"],
                      "reference_source": "compute_classes/devices.toml"},
        "certificate": cert,
        "date": cert["date"],
    }
