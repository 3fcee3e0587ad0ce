"""One training step: what training runs, what the throughput protocol times, what DoReMi's
proxy steps with.

The learning rate follows Languini Kitchen's schedule, a cosine that ends exactly on the last
budgeted step under a linear warm-up ramp, so a run is finished, not cut off, when its compute
is spent. The global batch is set by the certificate; micro-batches (gradient accumulation)
only change memory use. In fp16 a gradient scaler keeps small gradients from flushing to zero.
A step computes per-token negative log-likelihoods (`token_nll`, the one definition every
scorer shares) and a loss hook reduces them: their mean for training, a weighted mean over
domains for DoReMi's group DRO.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from languini import device as devices
from languini.config import TrainConfig
from languini.distributed import World
from languini.errors import UserError
from languini.family import Family

LossHook = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(per-token NLL, inputs, targets) of one micro-batch -> the scalar loss to minimise."""


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


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of each target under the logits, in fp32 whatever the logits'
    precision, shaped like `targets`: the training loss, evaluation and lm-eval all start here."""
    nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return nll.view(targets.shape)


def mean_nll(nll: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The training loss: every token counts the same."""
    return nll.mean()


def detach_state(state: Any) -> Any:
    """A carried recurrent state cut from the graph of the step that produced it."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    return type(state)(detach_state(s) for s in state)


def state_to(state: Any, dev: torch.device) -> Any:
    """A carried recurrent state on `dev` (a checkpoint keeps it on the CPU)."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.to(dev)
    return type(state)(state_to(s, dev) for s in state)


@dataclass
class TrainStep:
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
    world: World
    loss: LossHook = mean_nll

    @classmethod
    def build(cls, family: Family, model_cfg: Any, cfg: TrainConfig, dev: torch.device, world: World,
              loss: LossHook = mean_nll) -> "TrainStep":
        """The step training takes on `world`'s rows of each batch (DDP over its processes)."""
        model = family.build(model_cfg).to(dev)
        forward = torch.compile(model) if cfg.compile else model
        if world.active:
            forward = torch.nn.parallel.DistributedDataParallel(
                forward, device_ids=[dev.index] if dev.type == "cuda" else None)
        rows = world.rows(cfg.batch_size)
        n_micro = (rows.stop - rows.start) // cfg.micro()
        if n_micro < 1 or (rows.stop - rows.start) % cfg.micro():
            raise UserError(f"Each of {world.size} processes trains {rows.stop - rows.start} rows, which the "
                            f"micro-batch size {cfg.micro()} does not divide.")
        precision = devices.training_precision(cfg.precision, dev)
        scaler = torch.amp.GradScaler(dev.type, enabled=precision == "fp16")
        return cls(model, forward, make_optimizer(model, cfg), cfg, dev, precision, scaler, [None] * n_micro, world,
                   loss)

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
                loss = self.loss(token_nll(logits, ys), xs, ys)
                self.scaler.scale(loss / n).backward()
            total += loss.detach()
            self.states[i] = detach_state(state)
        if self.cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)  # skipped (and the scale lowered) when a gradient overflowed
        self.scaler.update()
        return total / n
