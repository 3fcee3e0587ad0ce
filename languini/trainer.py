"""The budget-driven training loop.

The number of steps is fixed before the first one: `steps = budget tokens // (batch · seq)`.
The learning rate warms up linearly and decays with a cosine that ends exactly on the last
budgeted step, so a run is finished, not cut off, when its compute is spent. The global batch
is set by the certificate; micro-batches (gradient accumulation) only change memory use.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from languini import device as devices
from languini.compute import Budget, budget_from_certificate, get_class
from languini.config import RunConfig, TrainConfig, train_config
from languini.data.loader import MixedStreams, PreparedData, StreamBatches
from languini.errors import UserError
from languini.family import Family, config_hash, load_family
from languini.mixes import Mix, train_domain_tokens
from languini.run import RunDir


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to lr·min_lr_ratio at the last step (step total-1)."""
    warmup = min(cfg.warmup_steps, max(1, total // 10))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - 1 - warmup)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; matrices get weight decay, biases, norms and embeddings' 1-D params do not."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=False)


def _detach(state: Any) -> Any:
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    return type(state)(_detach(s) for s in state)


@dataclass
class Trainable:
    """A model, its optimizer, and the carried state of each micro-batch: one training step."""

    model: torch.nn.Module
    forward: torch.nn.Module  # the model, or its compiled wrapper
    optimizer: torch.optim.Optimizer
    cfg: TrainConfig
    dev: torch.device
    states: list[Any]

    @classmethod
    def build(cls, family: Family, model_cfg: Any, cfg: TrainConfig, dev: torch.device) -> "Trainable":
        model = family.build(model_cfg).to(dev)
        forward = torch.compile(model) if cfg.compile else model
        n_micro = cfg.batch_size // cfg.micro()
        return cls(model, forward, make_optimizer(model, cfg), cfg, dev, [None] * n_micro)

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> torch.Tensor:
        """One optimizer step over the global batch; returns the mean loss (a device tensor)."""
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        m = self.cfg.micro()
        n = len(self.states)
        total = torch.zeros((), device=self.dev)
        for i in range(n):
            xs = x[i * m : (i + 1) * m].to(self.dev, non_blocking=True)
            ys = y[i * m : (i + 1) * m].to(self.dev, non_blocking=True)
            with devices.autocast(self.dev):
                logits, state = self.forward(xs, self.states[i])
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), ys.reshape(-1))
            (loss / n).backward()
            total += loss.detach()
            self.states[i] = _detach(state)
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
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
    """A certificate only buys a budget for the model and batch it measured."""
    if cert.get("model") != family.name:
        raise UserError(f"The throughput certificate is for family '{cert.get('model')}', not '{family.name}'.")
    if cert.get("config_hash") != config_hash(model_cfg):
        raise UserError(
            "The throughput certificate was measured on a different model config "
            f"(hash {cert.get('config_hash')} vs {config_hash(model_cfg)}): measure it again."
        )
    if int(cert.get("batch_size", -1)) != tcfg.batch_size:
        raise UserError(
            f"The certificate was measured at batch size {cert.get('batch_size')}, training asks for "
            f"{tcfg.batch_size}: train at the certified batch size or measure again."
        )


def plan(family_name: str, config_name: str, data_dir: str | Path, class_name: str,
         train_overrides: dict[str, Any], certificate: dict[str, Any] | None = None,
         calibration: dict[str, Any] | None = None, progress: bool = True, mix: Mix | None = None) -> Plan:
    """Resolve model, data, mix, certificate (measured now unless given) and budget; write nothing."""
    from languini import throughput

    family = load_family(family_name)
    data = PreparedData(mix.data if mix and mix.data else data_dir)
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
        certificate = throughput.measure(family, config_name, model_cfg, tcfg, progress=progress)
    else:
        check_certificate(certificate, family, model_cfg, tcfg)
    budget = budget_from_certificate(cls, certificate, calibration=calibration)
    if mix is not None:
        by_domain = train_domain_tokens(data)
        mix = mix.resolve(by_domain)
        mix.check_supply(by_domain, budget.tokens_trained)
    return Plan(family, config_name, model_cfg, tcfg, data, certificate, budget, mix)


def _validation_loss(model: torch.nn.Module, tokens: np.ndarray, seq_len: int, dev: torch.device) -> float:
    from languini.evaluate import score_model

    return float(score_model(model, tokens, seq_len, dev, stride=seq_len).nll.mean())


def train(p: Plan, run_path: str | Path, force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train exactly the planned budget in a new run directory, then evaluate on the test split."""
    from languini.evaluate import evaluate_run

    run = RunDir.create(run_path, force)
    tcfg, budget, seq_len = p.tcfg, p.budget, p.model_cfg.seq_len
    run.write_config(RunConfig(
        family=p.family.name, config_name=p.config_name, compute_class=budget.compute_class,
        data=str(p.data.path.resolve()), data_fingerprint=p.data.fingerprint,
        model=dataclasses.asdict(p.model_cfg), train=dataclasses.asdict(tcfg),
    ))
    run.write_json(run.throughput, p.certificate)
    run.write_json(run.budget, budget.to_dict())
    if p.mix is not None:
        run.write_json(run.mix, p.mix.to_dict())

    from torch.utils.tensorboard import SummaryWriter

    dev = devices.resolve(tcfg.device)
    torch.manual_seed(tcfg.seed)
    trainable = Trainable.build(p.family, p.model_cfg, tcfg, dev)
    batches = p.batches()
    val_tokens = p.data.stream("validation").read(0, min(tcfg.eval_tokens, len(p.data.stream("validation"))))
    eval_every = tcfg.eval_every or max(1, budget.steps // 10)
    tokens_per_step = tcfg.batch_size * seq_len

    writer = SummaryWriter(log_dir=str(run.tensorboard))
    bar = tqdm(total=budget.steps, desc=f"train {p.family.name}/{p.config_name}", unit="step", disable=not progress)
    wait = 0.0
    start = time.perf_counter()
    loss_value = float("nan")
    for step in range(budget.steps):
        t0 = time.perf_counter()
        x, y = batches.batch(step)
        wait += time.perf_counter() - t0
        lr = lr_at(step, budget.steps, tcfg)
        loss = trainable.step(x, y, lr)
        last = step == budget.steps - 1
        if step % tcfg.log_every == 0 or last:
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise UserError(f"The training loss became {loss_value} at step {step}; lower the learning rate.")
            tokens = (step + 1) * tokens_per_step
            ref_seconds = tokens / budget.reference_tokens_per_second
            elapsed = time.perf_counter() - start
            run.log({"step": step + 1, "tokens": tokens, "reference_seconds": ref_seconds, "lr": lr,
                     "loss": loss_value, "elapsed": elapsed, "data_wait_fraction": wait / elapsed})
            for axis, value in (("step", step + 1), ("tokens", tokens), ("reference_seconds", int(ref_seconds))):
                writer.add_scalar(f"train_loss/by_{axis}", loss_value, value)
            writer.add_scalar("lr/by_step", lr, step + 1)
            bar.set_postfix(loss=f"{loss_value:.3f}")
        if (step + 1) % eval_every == 0 or last:
            val = _validation_loss(trainable.model, val_tokens, seq_len, dev)
            tokens = (step + 1) * tokens_per_step
            run.log({"step": step + 1, "tokens": tokens, "split": "validation", "loss": val})
            writer.add_scalar("validation_loss/by_step", val, step + 1)
            writer.add_scalar("validation_loss/by_tokens", val, tokens)
        bar.update()
    bar.close()
    elapsed = time.perf_counter() - start
    writer.flush()
    run.save_checkpoint({"model": trainable.model.state_dict(), "optimizer": trainable.optimizer.state_dict(),
                         "step": budget.steps, "tokens": budget.tokens_trained})

    evaluation = evaluate_run(run.path, "test", progress=progress)
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
        "wall_seconds": elapsed,
        "train_tokens_per_second": budget.tokens_trained / elapsed,
        "data_wait_fraction": wait / elapsed,
        "epochs": budget.tokens_trained / len(p.data.stream("train")),
        "final_train_loss": loss_value,
        "implementation": p.certificate.get("implementation"),
        "data": {"path": str(p.data.path.resolve()), "fingerprint": p.data.fingerprint},
        "mix": p.mix.name if p.mix else "natural",
        "mix_details": None if p.mix is None else {
            **p.mix.to_dict(), "digest": p.mix.digest(), "realised_shares": batches.realised_shares(),
            "repeats": batches.repeats()},
        **evaluation,
    }
    run.write_json(run.result, result)
    return result
