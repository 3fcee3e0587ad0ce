"""The budget-driven training loop.

The number of steps is fixed before the first one: `steps = budget tokens // (batch · seq)`.
The learning rate follows Languini Kitchen's schedule, a cosine that ends exactly on the last
budgeted step under a linear warm-up ramp, so a run is finished, not cut off, when its compute
is spent. The global batch is set by the certificate; micro-batches (gradient accumulation)
only change memory use. In fp16 a gradient scaler keeps small gradients from flushing to zero.
"""

from __future__ import annotations

import contextlib
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
import torch.nn.functional as F
from tqdm import tqdm

from languini import device as devices
from languini.compute import Budget, budget_from_certificate, certificate_precision, get_class
from languini.config import RunConfig, TrainConfig, train_config
from languini.distributed import World, any_rank, barrier, broadcast, gather, main_only, mean, world
from languini.data.loader import MixedStreams, PreparedData, StreamBatches
from languini.errors import UserError, to_stderr
from languini.family import Family, config_differences, config_hash, load_family, make_dataclass_strict
from languini.io import atomic_write_json, read_json
from languini.mixes import Mix, train_domain_tokens
from languini.run import RunDir, RunResult
from languini.throughput import Stability, check_stable, measure


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Languini Kitchen's CosineLR, counted from step 1: a cosine from lr to lr·min_lr_ratio over
    steps 1..total (so the floor falls on the last step, index total-1) times a linear ramp
    min(step, warmup)/warmup. The warm-up is capped at a tenth of the run for short budgets."""
    warmup = max(1, min(cfg.warmup_steps, total // 10))
    t = step + 1
    floor = cfg.lr * cfg.min_lr_ratio
    cosine = floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(t, total) / total))
    return min(t, warmup) / warmup * cosine


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; matrices get weight decay, biases, norms and embeddings' 1-D params do not. With
    weight_decay 0 (the Languini sizes) every group's update is Adam's."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps, fused=False)


def _detach(state: Any) -> Any:
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    return type(state)(_detach(s) for s in state)


@dataclass
class Trainable:
    """A model, its optimizer, its precision, and the carried state of each micro-batch: one
    training step."""

    model: torch.nn.Module
    forward: torch.nn.Module  # the model, or its compiled wrapper
    optimizer: torch.optim.Optimizer
    cfg: TrainConfig
    dev: torch.device
    precision: str  # resolved: fp16 | bf16 | fp32
    scaler: torch.amp.GradScaler  # enabled in fp16 only; otherwise every call passes through
    states: list[Any]  # this rank's micro-batches' carried states
    world: World = World()

    @classmethod
    def build(cls, family: Family, model_cfg: Any, cfg: TrainConfig, dev: torch.device,
              world: World = World()) -> "Trainable":
        model = family.build(model_cfg).to(dev)
        forward = torch.compile(model) if cfg.compile else model
        if world.active:
            from torch.nn.parallel import DistributedDataParallel

            forward = DistributedDataParallel(forward, device_ids=[dev.index] if dev.type == "cuda" else None)
        rows = world.rows(cfg.batch_size)
        n_micro = (rows.stop - rows.start) // cfg.micro()
        if n_micro < 1 or (rows.stop - rows.start) % cfg.micro():
            raise UserError(f"Each of {world.size} processes trains {rows.stop - rows.start} rows, which the "
                            f"micro-batch size {cfg.micro()} does not divide.")
        precision = devices.training_precision(cfg.precision, dev)
        scaler = torch.amp.GradScaler(dev.type, enabled=precision == "fp16")
        return cls(model, forward, make_optimizer(model, cfg), cfg, dev, precision, scaler, [None] * n_micro, world)

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
        """One optimizer step over the global batch (this rank's rows of it); returns this rank's
        mean loss, a device tensor. Gradients average over micro-batches and, through DDP, ranks."""
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        rows = self.world.rows(x.shape[0])
        x, y = x[rows], y[rows]
        m = self.cfg.micro()
        n = len(self.states)
        total = torch.zeros((), device=self.dev)
        for i in range(n):
            xs = x[i * m : (i + 1) * m].to(self.dev, non_blocking=True)
            ys = y[i * m : (i + 1) * m].to(self.dev, non_blocking=True)
            sync = contextlib.nullcontext() if i == n - 1 or not self.world.active else self.forward.no_sync()
            with sync:
                with devices.autocast(self.dev, self.precision):
                    logits, state = self.forward(xs, self.states[i])
                loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), ys.reshape(-1))
                self.scaler.scale(loss / n).backward()
            total += loss.detach()
            self.states[i] = _detach(state)
        if self.cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)  # skipped (and the scale lowered) when a gradient overflowed
        self.scaler.update()
        return total / n


@dataclass
class Plan:
    """Everything decided before the first step, checked before anything is written."""

    family: Family
    config_name: str
    model_cfg: Any
    tcfg: TrainConfig
    data: PreparedData
    certificate: dict[str, Any]
    budget: Budget
    mix: Mix | None = None  # resolved (normalised weights); None: the split as contiguous streams

    def batches(self) -> StreamBatches | MixedStreams:
        if self.mix is None:
            return StreamBatches(self.data.stream("train"), self.tcfg.batch_size, self.model_cfg.seq_len)
        return MixedStreams(self.data, "train", self.mix.weights, self.tcfg.batch_size, self.model_cfg.seq_len,
                            self.tcfg.seed)


def check_certificate(cert: dict[str, Any], family: Family, model_cfg: Any, tcfg: TrainConfig) -> None:
    """A certificate only buys a budget for the model, batch and precision it measured."""
    if cert.get("model") != family.name:
        raise UserError(f"The throughput certificate is for family '{cert.get('model')}', not '{family.name}'.")
    if cert.get("config_hash") != config_hash(model_cfg):
        raise UserError(
            "The throughput certificate was measured on a different model config "
            f"({config_differences(cert.get('model_config'), model_cfg)}): measure it again."
        )
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


def plan(family_name: str, config_name: str, data_dir: str | Path | None, class_name: str,
         train_overrides: dict[str, Any], certificate: dict[str, Any] | None = None,
         calibration: dict[str, Any] | None = None, progress: bool = True, mix: Mix | None = None,
         any_tokenizer: bool = False, warn: Callable[[str], None] = to_stderr,
         stability: Stability = Stability()) -> Plan:
    """Resolve model, data, mix, certificate (measured now unless given) and budget; write nothing
    to the run.

    A mix that names its data trains on it (`data_dir` may then be None, or the same folder); a
    mix with a [dedup] table trains on that data deduplicated (made once beside it, then
    reused); a mix selected under another tokenizer is refused unless `any_tokenizer`, and a
    charged selection's cost comes out of the budget. A measurement too unsteady for
    `stability` is refused (or, given, a certificate marked noisy) where the class's budget
    depends on it."""
    family = load_family(family_name)
    data = PreparedData(_data_of(data_dir, mix))
    if mix is not None and mix.dedup is not None:
        data = _deduplicated(data, mix.dedup, progress)
    if mix is not None:
        note = mix.check_tokenizer(data, force=any_tokenizer)
        if note and world().is_main:
            warn(note)
    cls = get_class(class_name)
    model_cfg, defaults = family.config(config_name, vocab_size=data.vocab_size)
    if certificate is not None and train_overrides.get("batch_size") is None:
        # train at the batch size the certificate measured (a sweep's best, say)
        train_overrides = {**train_overrides, "batch_size": certificate.get("batch_size"),
                           "micro_batch_size": train_overrides.get("micro_batch_size")
                           or certificate.get("micro_batch_size")}
    tcfg = train_config(defaults, train_overrides)
    tcfg.micro()
    if certificate is None:
        certificate = _measured_on_main(family, config_name, model_cfg, tcfg, stability.for_class(cls), progress)
    else:
        check_certificate(certificate, family, model_cfg, tcfg)
        check_stable(certificate, cls, stability)
    budget = budget_from_certificate(cls, certificate, calibration=calibration, charge=mix.charge() if mix else None)
    if mix is not None:
        by_domain = train_domain_tokens(data)
        mix = mix.resolve(by_domain)
        mix.check_supply(by_domain, budget.tokens_trained)
    return Plan(family, config_name, model_cfg, tcfg, data, certificate, budget, mix)


def _measured_on_main(family: Family, config_name: str, model_cfg: Any, tcfg: TrainConfig, stability: Stability,
                      progress: bool) -> dict[str, Any]:
    """Rank 0 measures (on one device, as the protocol says); its refusal stops every rank."""
    w = world()
    measured: dict[str, Any] | str | None = None
    if w.is_main:
        try:
            measured = measure(family, config_name, model_cfg, tcfg, progress=progress, stability=stability)
        except UserError as e:
            measured = str(e)
    measured = broadcast(measured, w)
    if isinstance(measured, str):
        raise UserError(measured)
    return measured


def _data_of(data_dir: str | Path | None, mix: Mix | None) -> str | Path:
    """The folder a run trains on: the mix's, or `data_dir`; two different ones are a mistake."""
    named = mix.data if mix is not None else None
    if named is None:
        if data_dir is None:
            raise UserError("Give --data, or a --mix whose spec names its data.")
        return data_dir
    if data_dir is not None and Path(data_dir).resolve() != Path(named).resolve():
        raise UserError(f"Mix '{mix.name}' trains on {named}, but --data names {data_dir}; give one of them "
                        "(or edit the spec's `data`).")
    return named


def _deduplicated(parent: PreparedData, settings: dict[str, Any], progress: bool) -> PreparedData:
    """The deduplicated data, made by rank 0 while the others wait (under torchrun)."""
    from languini.data.dedup import deduplicated

    w = world()
    made = deduplicated(parent, settings, progress) if w.is_main else None
    barrier(w)
    return made or deduplicated(parent, settings, progress=False)  # made by rank 0 by now: opened, not written


def _validation_loss(model: torch.nn.Module, tokens: np.ndarray, seq_len: int, dev: torch.device) -> float:
    from languini.evaluate import score_model

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


def identity(p: Plan) -> dict[str, str]:
    """What a checkpoint must agree with to be resumed: the config, the data and the mix."""
    return {"config_hash": config_hash(p.model_cfg), "train_config": json.dumps(dataclasses.asdict(p.tcfg)),
            "data_fingerprint": p.data.fingerprint, "mix": p.mix.digest() if p.mix else "natural",
            "steps": str(p.budget.steps)}


def _save(run: RunDir, p: Plan, trainable: Trainable, batches: Any, counters: Counters) -> None:
    """Rank 0 writes; the carried states of every rank's micro-batches go in global order, so a
    checkpoint does not depend on the number of processes."""
    states = [s for rank_states in gather(_to(trainable.states, torch.device("cpu")), trainable.world)
              for s in rank_states]
    if trainable.world.is_main:
        run.save_checkpoint({
            "model": trainable.model.state_dict(), "optimizer": trainable.optimizer.state_dict(),
            "scaler": trainable.scaler.state_dict(),
            "states": states, "counters": dataclasses.asdict(counters), "rng": _rng_state(),
            "loader": batches.state_dict() if hasattr(batches, "state_dict") else None, "identity": identity(p),
        })


def train(p: Plan, run_path: str | Path, force: bool = False, progress: bool = True, verify_data: bool = False) -> dict[str, Any]:
    """Train exactly the planned budget in a new run directory, then evaluate on the test split.

    `verify_data` hashes every train shard even where this machine verified it before.
    Returns the result (None on ranks other than 0 under torchrun)."""
    w = world()
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


def plan_of_run(run: RunDir) -> Plan:
    """The plan a run directory was started with, rebuilt from its files."""
    from languini.mixes import parse_mix

    cfg = run.read_config()
    family = load_family(cfg.family)
    model_cfg = make_dataclass_strict(family.config_class, cfg.model, f"model config of {run.path}")
    tcfg = make_dataclass_strict(TrainConfig, cfg.train, f"training config of {run.path}")
    data = PreparedData(cfg.data)
    cert = read_json(run.throughput, "Throughput certificate")
    stored = read_json(run.budget, "Budget")
    budget = budget_from_certificate(get_class(cfg.compute_class), cert, stored.get("calibration"),
                                     charge=stored.get("charge"))
    mix = parse_mix(read_json(run.mix, "Mix"), str(run.mix), "mix") if run.mix.exists() else None
    return Plan(family, cfg.config_name, model_cfg, tcfg, data, cert, budget, mix)


def differences(a: dict[str, str], b: dict[str, str]) -> list[str]:
    return [k for k in a if a.get(k) != b.get(k)]


def resume(run_path: str | Path, new: Plan | None = None, force: bool = False, progress: bool = True,
           warn: Callable[[str], None] = to_stderr, verify_data: bool = False) -> dict[str, Any]:
    """Continue a run from its newest good checkpoint; a changed config or dataset needs force."""
    run = RunDir.open(run_path)
    if run.result.exists():
        raise UserError(f"Run {run.path} already finished; nothing to resume.")
    with main_only(world(), run.lock()):
        stored = plan_of_run(run)
        p = new or stored
        state, warning = run.restore_checkpoint()
        if warning and world().is_main:
            warn(f"warning: {warning}")
        changed = differences(state["identity"], identity(p))
        if changed and not force:
            raise UserError(f"The run's {', '.join(changed)} changed since its checkpoint; pass --force to resume anyway.")
        if changed and world().is_main:
            warn(f"warning: the run's {', '.join(changed)} changed since its checkpoint; resuming anyway (--force).")
        return _run(run, p, state, progress, verify_data)


def _run(run: RunDir, p: Plan, state: dict[str, Any] | None, progress: bool, verify_data: bool) -> dict[str, Any]:
    """The loop, from scratch (state None) or from a checkpoint, then the final evaluation."""
    from torch.utils.tensorboard import SummaryWriter

    from languini.evaluate import evaluate_run

    tcfg, budget, seq_len = p.tcfg, p.budget, p.model_cfg.seq_len
    w = world()
    main = w.is_main
    p.data.verify_shards("train", force=verify_data)
    dev = devices.resolve(w.device(tcfg.device))
    torch.manual_seed(tcfg.seed)
    trainable = Trainable.build(p.family, p.model_cfg, tcfg, dev, w)
    batches = p.batches()
    counters = Counters()
    if state is not None:
        trainable.model.load_state_dict(state["model"])
        trainable.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):  # fp16 runs; empty for a disabled scaler, absent in older checkpoints
            trainable.scaler.load_state_dict(state["scaler"])
        n = len(trainable.states)
        trainable.states = [_to(s, dev) for s in state["states"][w.rank * n : (w.rank + 1) * n]]
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
            loss = trainable.step(x, y, lr)
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
                val = _validation_loss(trainable.model, val_tokens, seq_len, dev)
                tokens = (step + 1) * tokens_per_step
                run.log({"step": step + 1, "tokens": tokens, "split": "validation", "loss": val})
                writer.add_scalar("validation_loss/by_step", val, step + 1)
                writer.add_scalar("validation_loss/by_tokens", val, tokens)
            bar.update()
            stop = any_rank(signals.received is not None, w)
            if last or stop or any_rank(checkpoint_due(tcfg.checkpoint_every, step + 1, last_save), w):
                _save(run, p, trainable, batches, counters)
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
    result = {
        "schema": 1,
        "family": p.family.name,
        "config": p.config_name,
        "model_config": dataclasses.asdict(p.model_cfg),
        "params": trainable.model.num_params(),
        "compute_class": budget.compute_class,
        "reference": budget.reference,
        "device": budget.device,
        "device_factor": budget.device_factor,
        "budget_mode": budget.mode,
        "budget_tokens": budget.tokens,
        "steps": budget.steps,
        "tokens_trained": budget.tokens_trained,
        "reference_hours": budget.reference_hours,
        "budget_charge": budget.charge,
        "wall_seconds": counters.elapsed,
        "train_tokens_per_second": budget.tokens_trained / counters.elapsed,
        "data_wait_fraction": counters.wait / counters.elapsed,
        "epochs": budget.tokens_trained / len(p.data.stream("train")),
        "final_train_loss": counters.loss,
        "implementation": p.certificate.get("implementation"),
        "data": {"path": str(p.data.path.resolve()), "fingerprint": p.data.fingerprint},
        "mix": p.mix.name if p.mix else "natural",
        "mix_details": None if p.mix is None else {
            **p.mix.to_dict(), "digest": p.mix.digest(), "realised_shares": batches.realised_shares(),
            "repeats": batches.repeats()},
        **evaluation,
    }
    final = RunResult.from_dict(result, run.result)
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


def _to(state: Any, dev: torch.device) -> Any:
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.to(dev)
    return type(state)(_to(s, dev) for s in state)
