"""The throughput measurement: tokens/s of a full training step, written as a certificate.

A step is what training does: forward, loss, backward (with the same gradient accumulation),
gradient clipping and the optimizer step, on random tokens, under the same device, dtype and
compile settings. Warm-up steps run untimed (compilation, autotuning, allocator growth
happen there); each timed step is synchronised with the device (CUDA events on GPU,
perf_counter on CPU) and the median is reported with its p10/p90 spread.

Other work on the machine makes steps slower and unsteady, and a rate measured then would
silently shrink every budget bought with it. So steps are timed in rounds until the last
round is steady (`Stability`); one that never gets steady is refused, or certified marked
`noisy` where the user allows it. The certificate keeps every round and the machine's load.

`sweep` grows the batch size until the device runs out of memory, each size in its own
subprocess so an out-of-memory error cannot poison the next measurement; the best batch size
sets the budget (Languini Kitchen's rule).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from languini import __version__
from languini import device as devices
from languini.compute import ComputeClass, certificate_precision, find_device, reference_yardstick
from languini.config import TrainConfig, train_config
from languini.distributed import World
from languini.errors import UserError
from languini.family import Family, config_differences, config_hash, load_family
from languini.io import read_json
from languini.step import TrainStep

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


@dataclass(frozen=True)
class Stability:
    """When timed steps are steady enough to certify.

    Rounds of timed steps run until the last round is steady, or `max_rounds` rounds have run;
    a last round still unsteady is refused unless `allow_noisy`, which certifies it marked noisy.

    What "steady" means depends on the device. On a GPU, a process sharing it makes some steps
    slow: a round is steady when its step times spread (p90/p10 − 1) by at most `tolerance`. On a
    CPU the spread says little: on an idle 2-core VM it was 15–35% (the same as beside a process
    competing for the cores), while the share of the CPU time its threads could use that the
    measurement got was 94–96% idle and 47–48% beside that process. So on a CPU a round is
    steady when that share is at least `min_cpu_share`.
    """

    tolerance: float = 0.10
    max_rounds: int = 5
    allow_noisy: bool = False
    min_cpu_share: float = 0.80

    def __post_init__(self) -> None:
        if not (self.tolerance >= 0 and math.isfinite(self.tolerance)) or self.max_rounds < 1:
            raise UserError("The spread tolerance must be a number >= 0 and the rounds at least 1.")
        if not (self.min_cpu_share >= 0 and math.isfinite(self.min_cpu_share)):
            raise UserError("The minimum CPU share must be a number >= 0 (0.8 means 80%).")

    def for_class(self, cls: ComputeClass) -> "Stability":
        """A FLOP class's budget does not depend on tokens/s: one round, never refused."""
        return self if cls.uses_throughput else replace(self, max_rounds=1, allow_noisy=True)

    def unsteady(self, measured: dict[str, Any]) -> str | None:
        """Why a round (or a certificate, which holds its last round's figures) is not steady,
        or None: its CPU share where one was measured (a CPU device), else its spread."""
        share = measured.get("cpu_share")
        if share is not None:
            if share >= self.min_cpu_share:
                return None
            return (f"the measurement got {share:.0%} of the CPU time its threads could use, under the "
                    f"{self.min_cpu_share:.0%} minimum")
        if measured["spread"] <= self.tolerance:
            return None
        return f"its step times spread by {measured['spread']:.1%} (p90/p10), over the {self.tolerance:.1%} tolerance"


def _round(times: list[float], tokens_per_step: int, cpu_share: float | None) -> dict[str, Any]:
    p10, median, p90 = (float(v) for v in np.percentile(times, [10, 50, 90]))
    return {"step_times": times, "step_time_p10": p10, "step_time_median": median, "step_time_p90": p90,
            "spread": p90 / p10 - 1, "cpu_share": cpu_share, "tokens_per_second": tokens_per_step / median}


class _CpuShare:
    """The share of the CPU time its threads could use that this process got over a stretch of
    wall time (CPU devices only: a competing process takes the rest)."""

    def __init__(self, dev: torch.device) -> None:
        self.on = dev.type == "cpu"

    def __enter__(self) -> "_CpuShare":
        self.cpu, self.wall = _process_cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        wall = time.perf_counter() - self.wall
        self.share = ((_process_cpu_seconds() - self.cpu) / (wall * torch.get_num_threads())
                      if self.on and wall > 0 else None)


def _process_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def other_gpu_processes(dev: torch.device) -> list[dict[str, Any]] | None:
    """Other processes on this GPU as nvidia-smi shows them; None where it cannot be seen
    (no CUDA, no nvidia-smi). A container may hide other tenants' processes."""
    smi = shutil.which("nvidia-smi")
    if dev.type != "cuda" or smi is None:
        return None
    query = [smi, "--query-compute-apps=gpu_uuid,pid,process_name,used_memory", "--format=csv,noheader,nounits"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    uuid = str(torch.cuda.get_device_properties(dev).uuid)
    rows = [[f.strip() for f in line.split(",")] for line in out.splitlines() if line.strip()]
    return [{"pid": int(pid), "name": name, "memory_mib": int(mem) if mem.isdigit() else None}
            for gpu, pid, name, mem in (r for r in rows if len(r) == 4)
            if gpu.removeprefix("GPU-") == uuid.removeprefix("GPU-") and pid.isdigit() and int(pid) != os.getpid()]


def machine_load(dev: torch.device) -> dict[str, Any]:
    """What else was running when the measurement ended."""
    return {"cpu_load_average": list(os.getloadavg()), "cpu_count": os.cpu_count(),
            "gpu_processes": other_gpu_processes(dev)}


def load_text(load: dict[str, Any]) -> str:
    gpu = load.get("gpu_processes")
    return (f"load average {load['cpu_load_average'][0]:.1f} on {load['cpu_count']} CPUs"
            + (f", {len(gpu)} other process(es) on the GPU" if gpu else ""))


def noisy_reason(cert: dict[str, Any]) -> str | None:
    """Why a certificate is marked noisy (None if it is not): what submit and train name."""
    if not cert.get("noisy"):
        return None
    stability = Stability(tolerance=cert["tolerance"], min_cpu_share=cert.get("min_cpu_share", 0.0))
    why = stability.unsteady(cert) or "it was certified noisy"
    return f"{why} in the last of {len(cert['rounds'])} rounds, at {load_text(cert['load'])}"


def check_stable(cert: dict[str, Any], cls: ComputeClass, stability: Stability) -> None:
    """A certificate marked noisy buys an hours budget only when noise is allowed again."""
    reason = noisy_reason(cert)
    if reason and cls.uses_throughput and not stability.allow_noisy:
        raise UserError(f"The throughput certificate is marked noisy ({reason}), and class '{cls.name}' "
                        "buys tokens by it; measure again on a quieter machine, or pass --allow-noisy.")


def measure(family: Family, config_name: str, model_cfg: Any, tcfg: TrainConfig, warmup: int = 3,
            steps: int = 10, progress: bool = True, stability: Stability = Stability()) -> dict[str, Any]:
    """Time `steps` steps per round until a round is steady (see `Stability`); certify the last.

    The step is training's own (`TrainStep`), on one device: the protocol measures one process."""
    if warmup < 0 or steps < 1:
        raise UserError("Warm-up steps must be >= 0 and timed steps >= 1.")
    dev = devices.resolve(tcfg.device)
    torch.manual_seed(tcfg.seed)
    trainable = TrainStep.build(family, model_cfg, tcfg, dev, World())
    B, T = tcfg.batch_size, model_cfg.seq_len
    gen = torch.Generator().manual_seed(tcfg.seed)
    x = torch.randint(0, model_cfg.vocab_size, (B, T), generator=gen)
    y = torch.randint(0, model_cfg.vocab_size, (B, T), generator=gen)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    bar = tqdm(total=warmup + steps, desc="throughput", disable=not progress, leave=False)

    def timed() -> float:
        devices.synchronize(dev)
        with _Timer(dev) as timer:
            trainable.step(x, y, lr=tcfg.lr)
        bar.update()
        return timer.seconds

    def round_() -> dict[str, Any]:
        with _CpuShare(dev) as share:
            times = [timed() for _ in range(steps)]
        return _round(times, B * T, share.share)

    for _ in range(warmup):
        timed()
    rounds = [round_()]
    while stability.unsteady(rounds[-1]) and len(rounds) < stability.max_rounds:
        bar.total += steps
        rounds.append(round_())
    bar.close()
    last, load = rounds[-1], machine_load(dev)
    why = stability.unsteady(last)
    if why and not stability.allow_noisy:
        raise UserError(f"The machine is busy: in the last of {len(rounds)} measuring rounds {why}, at "
                        f"{load_text(load)}; measure on a quieter machine, or pass --allow-noisy to certify it "
                        "marked noisy.")
    model = trainable.model
    name = devices.name(dev)
    tps = last["tokens_per_second"]
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
        "step_times": last["step_times"],
        "step_time_median": last["step_time_median"],
        "step_time_p10": last["step_time_p10"],
        "step_time_p90": last["step_time_p90"],
        "tokens_per_second": tps,
        "tokens_per_second_p10": B * T / last["step_time_p90"],
        "tokens_per_second_p90": B * T / last["step_time_p10"],
        "spread": last["spread"],
        "tolerance": stability.tolerance,
        "cpu_share": last["cpu_share"],
        "min_cpu_share": stability.min_cpu_share,
        "noisy": why is not None,
        "rounds": rounds,
        "load": load,
        "flops_per_token": flops,
        "peak_flops": peak,
        "mfu": tps * flops / peak if peak else None,
        "peak_memory_bytes": devices.peak_memory_bytes(dev),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


# --- reading and checking certificates -------------------------------------------------


def read_certificate(path: str | Path) -> dict[str, Any]:
    """A certificate from its JSON file; anything but a JSON object is refused in one sentence."""
    cert = read_json(path, "Throughput certificate")
    if not isinstance(cert, dict):
        raise UserError(f"{path} is not a throughput certificate.")
    return cert


def tokens_per_second_of(cert: dict[str, Any]) -> float:
    """The rate a certificate's own step times imply: a hand-edited rate does not match it."""
    return cert["batch_size"] * cert["seq_len"] / float(np.median(cert["step_times"]))


def rate_mismatch(cert: dict[str, Any]) -> str | None:
    """Why a certificate's tokens/s is not what its own step times give (None if it is)."""
    try:
        implied = tokens_per_second_of(cert)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return "the certificate lacks its step times, batch size or sequence length"
    if not math.isclose(implied, float(cert.get("tokens_per_second", -1)), rel_tol=1e-9):
        return (f"tokens_per_second {cert.get('tokens_per_second')} is not what its own step times "
                f"give ({implied:.6g})")
    return None


def model_mismatch(cert: dict[str, Any], family_name: str, model_cfg: Any) -> str | None:
    """Why a certificate did not measure this model (another family or config), None if it did:
    training refuses such a certificate and the submission check fails it."""
    if cert.get("model") != family_name:
        return f"the certificate is for family '{cert.get('model')}', not '{family_name}'"
    if cert.get("config_hash") != config_hash(model_cfg):
        return ("the certificate was measured on a different model config "
                f"({config_differences(cert.get('model_config'), model_cfg)})")
    return None


def check_certificate(cert: dict[str, Any], family: Family, model_cfg: Any, tcfg: TrainConfig) -> None:
    """A certificate only buys a budget for the model, batch and precision it measured."""
    if why := model_mismatch(cert, family.name, model_cfg):
        raise UserError(f"The throughput{why.removeprefix('the')}: measure it again.")
    if int(cert.get("batch_size", -1)) != tcfg.batch_size:
        raise UserError(
            f"The certificate was measured at batch size {cert.get('batch_size')}, training asks for "
            f"{tcfg.batch_size}: train at the certified batch size or measure again."
        )
    measured, wanted = certificate_precision(cert), devices.training_precision(tcfg.precision,
                                                                               devices.resolve(tcfg.device))
    if measured != wanted:
        raise UserError(f"The certificate was measured in {measured}, training would run in {wanted}: train with "
                        f"--precision {measured} or measure again.")


# --- the sweep --------------------------------------------------------------------------


def measure_request(request: dict[str, Any], progress: bool = False) -> dict[str, Any]:
    """Measure from a plain-data request: what a sweep worker receives."""
    family = load_family(request["family"])
    model_cfg, defaults = family.config(request["config"], **request.get("model_overrides", {}))
    tcfg = train_config(defaults, request.get("train_overrides", {}))
    return measure(family, request["config"], model_cfg, tcfg, request["warmup"], request["steps"], progress,
                   Stability(**request.get("stability", {})))


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
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1].removeprefix("error: ")
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


def calibrate(reference: str, config: str, batch_size: int, device: str = "auto", compile: bool = False,
              warmup: int = 3, steps: int = 10, progress: bool = True, precision: str = "auto",
              stability: Stability = Stability()) -> dict[str, Any]:
    """Time the yardstick (a GPT training step at seq 512) here; the factor converts to `reference`.

    device_factor = yardstick tokens/s on the reference (devices.toml) ÷ measured here, so that
    local tokens/s × factor = what the reference would do. The yardstick is timed in the
    precision the certificates it converts are measured in (the budget refuses a mismatch).
    """
    ref_tps = reference_yardstick(reference, config)
    request = {"family": "gpt", "config": config, "warmup": warmup, "steps": steps, "stability": asdict(stability),
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


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
