"""Time the qLSTM recurrence and qLSTM vs GPT training steps; write JSON to benchmarks/results/.

On a GPU, for each Languini size (channels = n_head · head_dim) and batch, at sequence length 512:
- forward + backward of the recurrence through the Triton kernels, the reference loop and
  the block-parallel scan under torch.compile, all reading bf16 pre-activations as in
  training under autocast;
- the kernels' achieved memory bandwidth: the bytes a forward + backward must move
  (`kernels.min_bytes`: pre read twice, h, dh, d_pre) over the time, against the device's
  datasheet peak (`memory_bandwidth` in compute_classes/devices.toml; a device not there gets
  no fraction);
- training tokens/s of qLSTM and GPT, one step = forward, cross-entropy, backward, AdamW step
  under bf16 autocast, same batch for both.
Targets: bandwidth >= 70% of peak, >= 10x the loop, >= 3x the compiled block-parallel scan,
qLSTM-small training >= 0.8x GPT-small. Every ratio is measured side by side in one run.

On a CPU: the block-parallel scan against the loop (fp32) at CPU-friendly sizes, and the
training tokens/s of both families, in a minute or two.

    python benchmarks/qlstm_kernel.py            # GPU if there is one, else CPU
    python benchmarks/qlstm_kernel.py --quick    # fewer sizes and repetitions
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from common import write_result

from baselines.qlstm import reference, scan
from languini import device as devices
from languini.compute import find_device
from languini.family import load_family

TARGETS = {"bandwidth_fraction": 0.70, "speedup_vs_loop": 10.0, "speedup_vs_block_compiled": 3.0,
           "train_ratio_small": 0.8}
GPU_SIZES, CPU_SIZES = "mini,tiny,small,medium,large", "nano,micro"


def peak_gbps(name: str) -> float | None:
    """The device's datasheet memory bandwidth from compute_classes/devices.toml, in GB/s."""
    found = find_device(name)
    return float(found[1]["memory_bandwidth"]) / 1e9 if found and "memory_bandwidth" in found[1] else None


def peak_note(dev: torch.device, peak: float | None) -> str:
    if dev.type != "cuda":
        return "CPU run: block-parallel scan vs loop, no kernel or bandwidth figures"
    if peak is None:
        return "device not in devices.toml: no bandwidth fraction"
    return "datasheet DRAM bandwidth; achieved = bytes that must move / kernel time"


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def median_ms(
    fns: dict[str, Callable[[], object]], dev: torch.device, warmup: int, reps: int
) -> dict[str, float | None]:
    """Median wall time of each function in milliseconds, timed in turns so that load from
    elsewhere falls on all of them alike; None for one that runs out of device memory (the
    block-parallel scan's (B, T, L, C) decay tensor does on smaller GPUs)."""
    live = {}
    for name, fn in fns.items():
        try:
            for _ in range(warmup):
                fn()
            live[name] = fn
        except torch.OutOfMemoryError:
            pass
        finally:
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    times: dict[str, list[float]] = {name: [] for name in live}
    for _ in range(reps):
        for name, fn in live.items():
            devices.synchronize(dev)
            start = time.perf_counter()
            fn()
            devices.synchronize(dev)
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(times[name]) if name in live else None for name in fns}


def recurrence_steps(fns: dict[str, Callable], B: int, T: int, C: int, dtype: torch.dtype,
                     dev: torch.device) -> dict[str, Callable[[], object]]:
    """One forward + backward of each implementation on the same random inputs."""
    pre = (torch.randn(B, T, 4, C, device=dev) * 2).to(dtype).requires_grad_()
    c0 = torch.randn(B, C, device=dev, requires_grad=True)
    dh, dc = torch.randn(B, T, C, device=dev).to(dtype), torch.randn(B, C, device=dev)

    def step(fn: Callable) -> Callable[[], object]:
        def run():
            h, c = fn(pre, c0)
            return torch.autograd.grad((h, c), (pre, c0), (dh, dc))

        return run

    return {name: step(fn) for name, fn in fns.items()}


def bench_recurrence(args, dev: torch.device, peak: float | None) -> list[dict]:
    on_gpu = dev.type == "cuda"
    dtype = torch.bfloat16 if on_gpu else torch.float32
    rows = []
    for size in args.sizes.split(","):
        cfg, _ = load_family("qlstm").config(size)
        T, C = args.seq_len or cfg.seq_len, cfg.width
        for B in map(int, args.batches.split(",")):
            fns = {"loop": reference.qlstm_scan}
            if on_gpu:
                from baselines.qlstm import kernels

                fns["kernel"] = kernels.qlstm_scan
                if args.compile:
                    torch.compiler.reset()  # a fresh cache per shape: no recompile limit
                    fns["block_compiled"] = torch.compile(scan.qlstm_scan, dynamic=False)
            else:
                fns["block"] = scan.qlstm_scan
            ms = median_ms(recurrence_steps(fns, B, T, C, dtype, dev), dev, args.warmup, args.reps)
            row = {"size": size, "batch": B, "seq_len": T, "channels": C, "dtype": str(dtype).removeprefix("torch.")}
            row.update({f"{name}_ms": v for name, v in ms.items()})
            if on_gpu:
                row["bytes"] = kernels.min_bytes(B, T, C, dtype)
                row["bandwidth_gbps"] = ratio(row["bytes"] / 1e6, row["kernel_ms"])
                row["bandwidth_fraction"] = ratio(row["bandwidth_gbps"], peak)
                row["speedup_vs_loop"] = ratio(row["loop_ms"], row["kernel_ms"])
                row["speedup_vs_block_compiled"] = ratio(row.get("block_compiled_ms"), row["kernel_ms"])
            else:
                row["block_speedup_vs_loop"] = ratio(row["loop_ms"], row["block_ms"])
            rows.append(row)
            timings = ", ".join(f"{k}={fmt(v)}" for k, v in row.items() if k.endswith(("_ms", "_gbps")))
            print(f"  recurrence {size} B={B}: {timings}", flush=True)
            if on_gpu:
                torch.cuda.empty_cache()
    return rows


def ratio(slow: float | None, fast: float | None) -> float | None:
    return slow / fast if slow is not None and fast is not None else None


def training_step(family: str, size: str, args, dev: torch.device) -> tuple[Callable[[], None], str | None]:
    """A full training step (forward, cross-entropy, backward, AdamW step) of a fresh model,
    and the model's scan implementation where it has one."""
    fam = load_family(family)
    cfg, _ = fam.config(size)
    T = args.seq_len or cfg.seq_len
    torch.manual_seed(0)
    model = fam.build(cfg).to(dev)
    forward = torch.compile(model) if args.compile_models else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev.type == "cuda")
    x = torch.randint(0, cfg.vocab_size, (args.train_batch, T + 1), device=dev)

    def step() -> None:
        with devices.autocast(dev):
            logits, _ = forward(x[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, getattr(model, "scan_impl", None)


def bench_training(args, dev: torch.device) -> list[dict]:
    """Both families' steps timed in turns, so the ratio sees the same machine state; a size
    that does not fit gives None."""
    rows = []
    for size in args.sizes.split(","):
        T = args.seq_len or load_family("qlstm").config(size)[0].seq_len
        (q_step, impl), (g_step, _) = (training_step(f, size, args, dev) for f in ("qlstm", "gpt"))
        ms = median_ms({"qlstm": q_step, "gpt": g_step}, dev, args.warmup + 2 * args.compile_models, args.reps)
        del q_step, g_step
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        q, g = (ratio(args.train_batch * T * 1e3, ms[f]) for f in ("qlstm", "gpt"))
        rows.append({"size": size, "batch": args.train_batch, "seq_len": T, "qlstm_tokens_per_s": q,
                     "gpt_tokens_per_s": g, "ratio": ratio(q, g), "qlstm_scan_impl": impl})
        print(f"  training {size}: qLSTM {fmt(q)} tok/s ({impl}), GPT {fmt(g)} tok/s, ratio {fmt(ratio(q, g))}",
              flush=True)
    return rows


def fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return "-" if v is None else str(v)


def print_table(rows: list[dict], columns: list[tuple[str, str]]) -> None:
    """`columns`: (key, header); a header naming a target shows it, e.g. 'x loop (>=10)'."""
    table = [[h for _, h in columns]] + [[fmt(r.get(k)) for k, _ in columns] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        print("  ".join(cell.rjust(w) for cell, w in zip(line, widths)))


def report(result: dict) -> None:
    gpu = result["device_type"] == "cuda"
    print(f"\n{result['device']}  torch {torch.__version__}  triton {result['triton']}  "
          f"peak {fmt(result['peak_gbps'])} GB/s")
    rec_cols = [("size", "size"), ("batch", "batch"), ("channels", "C"), ("loop_ms", "loop ms")]
    if gpu:
        rec_cols += [("block_compiled_ms", "block+compile ms"), ("kernel_ms", "kernel ms"),
                     ("bandwidth_gbps", "GB/s"), ("bandwidth_fraction", "of peak (>=0.70)"),
                     ("speedup_vs_loop", "x loop (>=10)"), ("speedup_vs_block_compiled", "x block+compile (>=3)")]
    else:
        rec_cols += [("block_ms", "block ms"), ("block_speedup_vs_loop", "block x loop")]
    print_table(result["recurrence"], rec_cols)
    if result["training"]:
        print()
        print_table(result["training"], [("size", "size"), ("batch", "batch"), ("qlstm_tokens_per_s", "qLSTM tok/s"),
                                         ("gpt_tokens_per_s", "GPT tok/s"),
                                         ("ratio", "qLSTM/GPT (small >=0.8)" if gpu else "qLSTM/GPT"),
                                         ("qlstm_scan_impl", "scan")])
    if gpu:
        print("\ntargets met:", result["targets_met"])


def targets_met(result: dict) -> dict[str, bool | None]:
    """Each GPU target over every measured row (the worst row decides); None if unmeasured."""
    rec = result["recurrence"]

    def worst(key: str) -> float | None:
        values = [r[key] for r in rec if r.get(key) is not None]
        return min(values) if values else None

    met = {key: (v >= TARGETS[key] if (v := worst(key)) is not None else None)
           for key in ("bandwidth_fraction", "speedup_vs_loop", "speedup_vs_block_compiled")}
    small = [r["ratio"] for r in result["training"] if r["size"] == "small" and r["ratio"] is not None]
    met["train_ratio_small"] = small[0] >= TARGETS["train_ratio_small"] if small else None
    return met


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--sizes", help=f"comma-separated qLSTM/GPT sizes (GPU: {GPU_SIZES}; CPU: {CPU_SIZES})")
    p.add_argument("--batches", help="comma-separated batch sizes for the recurrence (GPU: 64,128; CPU: 16)")
    p.add_argument("--seq-len", type=int, help="sequence length (default: each size's seq_len)")
    p.add_argument("--train-batch", type=int, help="batch size of the training steps (GPU: 32; CPU: 16)")
    p.add_argument("--warmup", type=int, default=3,
                   help="untimed calls before timing, compilation included (default: 3, at least 1)")
    p.add_argument("--reps", type=int, default=10, help="timed calls; the median is reported (default: 10)")
    p.add_argument("--no-train", dest="train", action="store_false", help="skip the training-step comparison")
    p.add_argument("--no-compile", dest="compile", action="store_false",
                   help="skip the torch.compile'd block-parallel baseline (GPU)")
    p.add_argument("--compile-models", action="store_true", help="torch.compile both models for the training steps")
    p.add_argument("--quick", action="store_true", help="two sizes, one batch, three repetitions")
    args = p.parse_args(argv)
    args.warmup = max(args.warmup, 1)
    gpu = devices.resolve(args.device).type == "cuda"
    if args.quick:
        args.sizes = args.sizes or ("mini,small" if gpu else "nano,micro")
        args.batches = args.batches or ("64" if gpu else "8")
        args.warmup, args.reps = 1, 3
    args.sizes = args.sizes or (GPU_SIZES if gpu else CPU_SIZES)
    args.batches = args.batches or ("64,128" if gpu else "16")
    args.train_batch = args.train_batch or (32 if gpu else 16)
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    dev = devices.resolve(args.device)
    name = devices.name(dev)
    peak = peak_gbps(name) if dev.type == "cuda" else None
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    print(f"qLSTM recurrence and training throughput on {name}", flush=True)
    load_before = os.getloadavg()[0]
    result = {
        "benchmark": "qlstm_kernel",
        "device": name,
        "device_type": dev.type,
        "peak_gbps": peak,
        "peak_note": peak_note(dev, peak),
        "triton": triton_version,
        "args": vars(args),
        "targets": TARGETS if dev.type == "cuda" else {},
        "recurrence": bench_recurrence(args, dev, peak),
        "training": bench_training(args, dev) if args.train else [],
    }
    # Other work on the machine slows the CPU figures; ratios, timed in turns, suffer less.
    result["load_average_1min"] = {"before": load_before, "after": os.getloadavg()[0]}
    if dev.type == "cuda":
        result["targets_met"] = targets_met(result)
    report(result)
    path = write_result(f"qlstm_kernel-{slug(name) if dev.type == 'cuda' else 'cpu'}", result)
    print(f"\nwrote {path}")
    return result


if __name__ == "__main__":
    main()
