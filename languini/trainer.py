"""The budget-driven training loop: steps, logs, checkpoints, signals, the final evaluation.

What the loop trains is decided before it starts (`languini.plan`); each step is
`languini.step.TrainStep`. A run stops on its last budgeted step, or on SIGINT/SIGTERM after
finishing the step in hand and checkpointing, and `resume` continues it bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from languini import device as devices
from languini.config import RunConfig
from languini.distributed import World, any_rank, barrier, gather, main_only, mean
from languini.errors import UserError, to_stderr
from languini.evaluate import evaluate_run, score_model
from languini.family import config_hash
from languini.io import atomic_write_json
from languini.plan import Plan, plan_of_run
from languini.run import RunDir, RunResult
from languini.step import TrainStep, lr_at, state_to


def _validation_loss(model: torch.nn.Module, tokens: np.ndarray, seq_len: int, dev: torch.device) -> float:
    return float(score_model(model, tokens, seq_len, dev, stride=seq_len).nll.mean())


class Interrupted(UserError):
    """Training stopped on a signal after checkpointing; the message says how to resume."""

    exit_code = 130


class _Signals:
    """SIGINT/SIGTERM set a flag; the loop finishes its step, checkpoints and stops."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_Signals":
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def checkpoint_due(every: str, step: int, last_save: float) -> bool:
    """`every` is a number of steps ("500") or of minutes ("10m")."""
    if every.endswith("m"):
        return time.monotonic() - last_save >= float(every[:-1]) * 60
    return step % int(every) == 0


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Counters:
    """Progress that is not in the model or optimizer: saved with every checkpoint."""

    step: int = 0  # steps completed
    elapsed: float = 0.0  # training wall seconds, summed over sessions
    wait: float = 0.0  # of which waiting for data
    loss: float = float("nan")  # the last logged training loss


def checkpoint_identity(p: Plan) -> dict[str, str]:
    """What a checkpoint must agree with to be resumed: the config, the data and the mix."""
    return {"config_hash": config_hash(p.model_cfg), "train_config": json.dumps(dataclasses.asdict(p.tcfg)),
            "data_fingerprint": p.data.fingerprint, "mix": p.mix.digest() if p.mix else "natural",
            "steps": str(p.budget.steps)}


def save_checkpoint(run: RunDir, p: Plan, train_step: TrainStep, batches: Any, counters: Counters) -> None:
    """Model, optimizer, scaler, carried states, counters, random states, the loader's place and
    what the run is. Rank 0 writes; the carried states of every rank's micro-batches go in
    global order, so a checkpoint does not depend on the number of processes."""
    states = [s for rank_states in gather(state_to(train_step.states, torch.device("cpu")), train_step.world)
              for s in rank_states]
    if train_step.world.is_main:
        run.save_checkpoint({
            "model": train_step.model.state_dict(), "optimizer": train_step.optimizer.state_dict(),
            "scaler": train_step.scaler.state_dict(),
            "states": states, "counters": dataclasses.asdict(counters), "rng": _rng_state(),
            "loader": batches.state_dict() if hasattr(batches, "state_dict") else None,
            "identity": checkpoint_identity(p),
        })


def train(p: Plan, run_path: str | Path, force: bool = False, progress: bool = True,
          verify_data: bool = False) -> dict[str, Any] | None:
    """Train exactly the planned budget in a new run directory, then evaluate on the test split.

    `verify_data` hashes every train shard even where this machine verified it before.
    Returns the result (None on ranks other than 0 of the plan's world under torchrun)."""
    w = p.world
    if w.is_main:
        RunDir.create(run_path, force)
    barrier(w)
    run = RunDir(Path(run_path))
    with main_only(w, run.lock()):
        if w.is_main:
            write_plan(run, p)
        return _run(run, p, None, progress, verify_data)


def write_plan(run: RunDir, p: Plan) -> None:
    """What a run is, before its first step: config, certificate, budget (and mix)."""
    run.write_config(RunConfig(
        family=p.family.name, config_name=p.config_name, compute_class=p.budget.compute_class,
        data=str(p.data.path.resolve()), data_fingerprint=p.data.fingerprint,
        model=dataclasses.asdict(p.model_cfg), train=dataclasses.asdict(p.tcfg),
    ))
    atomic_write_json(run.throughput, p.certificate)
    atomic_write_json(run.budget, p.budget.to_dict())
    if p.mix is not None:
        atomic_write_json(run.mix, p.mix.to_dict())


def differences(a: dict[str, str], b: dict[str, str]) -> list[str]:
    return [k for k in a if a.get(k) != b.get(k)]


def resume(run_path: str | Path, *, world: World, new: Plan | None = None, force: bool = False,
           progress: bool = True, warn: Callable[[str], None] = to_stderr,
           verify_data: bool = False) -> dict[str, Any] | None:
    """Continue a run from its newest good checkpoint on `world` (or `new`'s plan, made for the
    same world); a changed config or dataset needs force."""
    run = RunDir.open(run_path)
    if run.result.exists():
        raise UserError(f"Run {run.path} already finished; nothing to resume.")
    with main_only(world, run.lock()):
        stored = plan_of_run(run, world)
        p = new or stored
        state, warning = run.restore_checkpoint()
        if warning and world.is_main:
            warn(f"warning: {warning}")
        changed = differences(state["identity"], checkpoint_identity(p))
        if changed and not force:
            raise UserError(f"The run's {', '.join(changed)} changed since its checkpoint; pass --force to resume anyway.")
        if changed and world.is_main:
            warn(f"warning: the run's {', '.join(changed)} changed since its checkpoint; resuming anyway (--force).")
        return _run(run, p, state, progress, verify_data)


def _run(run: RunDir, p: Plan, state: dict[str, Any] | None, progress: bool,
         verify_data: bool) -> dict[str, Any] | None:
    """The loop, from scratch (state None) or from a checkpoint, then the final evaluation."""
    tcfg, budget, seq_len = p.tcfg, p.budget, p.model_cfg.seq_len
    w = p.world
    main = w.is_main
    p.data.verify_shards("train", force=verify_data)
    dev = devices.resolve(w.device(tcfg.device))
    torch.manual_seed(tcfg.seed)
    train_step = TrainStep.build(p.family, p.model_cfg, tcfg, dev, w)
    batches = p.batches()
    counters = Counters()
    if state is not None:
        train_step.model.load_state_dict(state["model"])
        train_step.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):  # fp16 runs; empty for a disabled scaler, absent in older checkpoints
            train_step.scaler.load_state_dict(state["scaler"])
        n = len(train_step.states)
        train_step.states = [state_to(s, dev) for s in state["states"][w.rank * n : (w.rank + 1) * n]]
        if state["loader"] is not None:
            batches.load_state_dict(state["loader"])
        counters = Counters(**state["counters"])
        _set_rng_state(state["rng"])
        if main:
            run.truncate_metrics(counters.step)
    val_stream = p.data.stream("validation")
    val_tokens = val_stream.read(0, min(tcfg.eval_tokens, len(val_stream)))
    eval_every = tcfg.eval_every or max(1, budget.steps // 10)
    tokens_per_step = tcfg.batch_size * seq_len

    writer = SummaryWriter(log_dir=str(run.tensorboard)) if main else None
    bar = tqdm(total=budget.steps, initial=counters.step, desc=f"train {p.family.name}/{p.config_name}",
               unit="step", disable=not (progress and main))
    session_start, last_save = time.perf_counter(), time.monotonic()
    elapsed_before = counters.elapsed
    with _Signals() as signals:
        for step in range(counters.step, budget.steps):
            t0 = time.perf_counter()
            x, y = batches.batch(step)
            counters.wait += time.perf_counter() - t0
            lr = lr_at(step, budget.steps, tcfg)
            loss = train_step.step(x, y, lr)
            last = step == budget.steps - 1
            counters.step = step + 1
            counters.elapsed = elapsed_before + time.perf_counter() - session_start
            if step % tcfg.log_every == 0 or last:
                counters.loss = mean(loss, w).item()
                if not math.isfinite(counters.loss):
                    raise UserError(f"The training loss became {counters.loss} at step {step}; lower the learning rate.")
                if main:
                    _log_step(run, writer, counters, lr, tokens_per_step, budget.reference_tokens_per_second)
                    bar.set_postfix(loss=f"{counters.loss:.3f}")
            if main and ((step + 1) % eval_every == 0 or last):
                val = _validation_loss(train_step.model, val_tokens, seq_len, dev)
                tokens = (step + 1) * tokens_per_step
                run.log({"step": step + 1, "tokens": tokens, "split": "validation", "loss": val})
                writer.add_scalar("validation_loss/by_step", val, step + 1)
                writer.add_scalar("validation_loss/by_tokens", val, tokens)
            bar.update()
            stop = any_rank(signals.received is not None, w)
            if last or stop or any_rank(checkpoint_due(tcfg.checkpoint_every, step + 1, last_save), w):
                save_checkpoint(run, p, train_step, batches, counters)
                last_save = time.monotonic()
            if stop and not last:
                bar.close()
                if writer:
                    writer.close()
                raise Interrupted(f"{signals.received or 'a signal'} received: stopped after step {step + 1} of "
                                  f"{budget.steps} and checkpointed; continue with `languini resume {run.path}`.")
    bar.close()
    barrier(w)  # the final checkpoint is on disk before any rank evaluates it

    evaluation = evaluate_run(run.path, "test", device=w.device(tcfg.device), progress=progress and main, world=w)
    if not main:
        return None
    writer.add_scalar("test/bits_per_byte", evaluation["test"]["bits_per_byte"], budget.steps)
    writer.close()
    final = RunResult(
        family=p.family.name,
        config=p.config_name,
        model_config=dataclasses.asdict(p.model_cfg),
        params=train_step.model.num_params(),
        compute_class=budget.compute_class,
        reference=budget.reference,
        device=budget.device,
        device_factor=budget.device_factor,
        budget_mode=budget.mode,
        budget_tokens=budget.tokens,
        steps=budget.steps,
        tokens_trained=budget.tokens_trained,
        reference_hours=budget.reference_hours,
        budget_charge=budget.charge.to_dict() if budget.charge else None,
        wall_seconds=counters.elapsed,
        train_tokens_per_second=budget.tokens_trained / counters.elapsed,
        data_wait_fraction=counters.wait / counters.elapsed,
        epochs=budget.tokens_trained / len(p.data.stream("train")),
        final_train_loss=counters.loss,
        implementation=p.certificate.get("implementation"),
        data={"path": str(p.data.path.resolve()), "fingerprint": p.data.fingerprint},
        mix=p.mix.name if p.mix else "natural",
        mix_details=None if p.mix is None else {
            **p.mix.to_dict(), "digest": p.mix.digest(), "realised_shares": batches.realised_shares(),
            "repeats": batches.repeats()},
        **evaluation,
    )
    final.warnings = final.warnings_for(tcfg.warmup_steps)
    final.write(run.result)
    return final.to_dict()


def _log_step(run: RunDir, writer: Any, c: Counters, lr: float, tokens_per_step: int, ref_tps: float) -> None:
    tokens = c.step * tokens_per_step
    ref_seconds = tokens / ref_tps
    run.log({"step": c.step, "tokens": tokens, "reference_seconds": ref_seconds, "lr": lr, "loss": c.loss,
             "elapsed": c.elapsed, "data_wait_fraction": c.wait / c.elapsed})
    for axis, value in (("step", c.step), ("tokens", tokens), ("reference_seconds", int(ref_seconds))):
        writer.add_scalar(f"train_loss/by_{axis}", c.loss, value)
    writer.add_scalar("lr/by_step", lr, c.step)
