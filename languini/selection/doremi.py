"""DoReMi (Xie et al. 2023): domain weights from a small proxy model trained with group DRO.

1. A reference model is trained with the harness on the natural mix (the split as it is) for a
   compute class.
2. A proxy model of the same size and budget (the same certificate, so the same steps) is
   trained with group DRO. At every step, for each domain d the excess loss λ_d is the proxy's
   per-token loss minus the reference's on the same tokens, clipped at 0, averaged over that
   domain's tokens in the batch (a domain absent from a batch keeps its last value). Then
        log α ← log α + η·λ,  α ← α / Σα,  α ← (1 − c)·α + c/k
   and the proxy takes an optimizer step on Σ_d α_d · (its mean loss on domain d); the
   gradient flows through the proxy only.
3. The domain weights are the mean of α over all steps (η = 1, c = 1e-3 by default, as in the
   paper's code), written as a mix spec whose `[weights]` table `--mix` reads.

Known failure modes, guarded against: weights collapse onto one domain when batches miss
domains (a missing domain's excess loss is stale while the others move), so every batch here
holds every domain (row j of a batch reads domain j mod k, a continuous stream of its
documents); and weights do not transfer across tokenizers, so the spec records the
tokenizer's sha256 (`Mix.check_tokenizer` refuses another).
The proxy trains each global batch in one piece (no gradient accumulation): the weight update
needs the whole batch's losses before the step.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from languini import device as devices
from languini.data.derive import open_parent
from languini.data.loader import PreparedData
from languini.data.streams import MixedStreams
from languini.distributed import World
from languini.errors import UserError
from languini.io import atomic_write_bytes, atomic_write_json
from languini.mix import Mix, SelectionCost, check_spec_out, train_domain_tokens, write_mix
from languini.plan import Plan, plan
from languini.plots import doremi_trajectory, png_bytes
from languini.run import RunDir, model_warnings
from languini.selection.models import (cost, load_selection_model, selection_table, selection_warnings, total_cost,
                                      train_model)
from languini.step import TrainStep, detach_state, lr_at, token_nll
from languini.throughput import Stability, read_certificate
from languini.trainer import Counters, save_checkpoint, write_plan


def doremi(data_dir: str | Path, out_mix: str | Path, *, family: str = "gpt", config: str = "nano",
           class_name: str, eta: float = 1.0, smoothing: float = 1e-3, seed: int = 0,
           train_overrides: dict[str, Any] | None = None, max_epochs: float = 4.0, charge_selection: bool = False,
           stability: Stability = Stability(), progress: bool = True, force: bool = False) -> dict[str, Any]:
    """Train a reference and a group-DRO proxy (`family`/`config` at `class_name`, in
    `MIX.runs/`) on `data_dir` and write the averaged domain weights as the mix spec `out_mix`,
    with the weight trajectory beside it (`MIX.trajectory.json`, `MIX.trajectory.png`).
    The reference's certificate is measured under `stability`; both models train in this one
    process. Returns the report."""
    check_settings(eta, smoothing)
    out_mix = Path(out_mix)
    check_spec_out(out_mix, force)
    data = open_parent(data_dir)
    domains = [d for d, n in train_domain_tokens(data).items() if n > 0]
    if len(domains) < 2:
        raise UserError(f"DoReMi weighs domains against each other, but {data.path} has {len(domains)} in its train split.")
    work = out_mix.with_name(out_mix.stem + ".runs")
    if work.exists() and any(work.iterdir()) and not force:
        raise UserError(f"{work} holds the runs of an earlier DoReMi; pass --force to replace them.")
    overrides = {**(train_overrides or {}), "seed": seed}
    train_model(family, config, data.path, class_name, work / "reference", overrides, stability, progress)
    certificate = read_certificate(work / "reference" / "throughput.json")
    p = plan(family, config, data.path, class_name, overrides, world=World(), certificate=certificate,
             stability=stability, progress=progress)
    dev = devices.resolve(p.tcfg.device)
    reference = load_selection_model(work / "reference", data, dev)
    trajectory = train_proxy(p, reference.model, domains, eta, smoothing, work / "proxy", progress)
    spent = total_cost({
        "reference": cost(reference.budget, reference.result.tokens_trained, p.budget.tokens_trained),
        "proxy": cost(p.budget.to_dict(), p.budget.tokens_trained, 0),
    })
    weights = dict(zip(domains, trajectory.weights.mean(0).tolist()))
    paths = {"trajectory": out_mix.with_suffix(".trajectory.json"), "figure": out_mix.with_suffix(".trajectory.png")}
    natural = _shares(train_domain_tokens(data), domains)
    report = {
        "method": "doremi",
        "data": {"path": str(data.path), "fingerprint": data.fingerprint},
        "mix": str(out_mix),
        "settings": {"family": p.family.name, "config": p.config_name, "compute_class": p.budget.compute_class,
                     "eta": eta, "smoothing": smoothing, "seed": seed, "steps": p.budget.steps,
                     "batch_size": p.tcfg.batch_size, "seq_len": p.model_cfg.seq_len,
                     "sampling": "every batch holds every domain: row j reads domain j mod k"},
        "weights": weights,
        "natural": natural,
        "final_weights": dict(zip(domains, trajectory.weights[-1].tolist())),
        "mean_excess_loss": dict(zip(domains, trajectory.excess.mean(0).tolist())),
        "reference_run": str(work / "reference"),
        "proxy_run": str(work / "proxy"),
        **{k: str(v) for k, v in paths.items()},
        "cost": spent.report(),
        "warnings": [*selection_warnings("reference", reference, spent),
                     *model_warnings("proxy", work / "proxy", p.budget.steps)],
    }
    atomic_write_json(paths["trajectory"], {**report, **trajectory.to_dict()})
    atomic_write_bytes(paths["figure"], png_bytes(doremi_trajectory(domains, trajectory.weights, natural)))
    write_mix(out_mix, Mix(out_mix.stem, weights, max_epochs, str(data.path), selection_table(
        "doremi", data, spent, charge_selection, family=p.family.name, config=p.config_name,
        compute_class=p.budget.compute_class, eta=eta, smoothing=smoothing, steps=p.budget.steps,
        reference_run=str((work / "reference").resolve()), proxy_run=str((work / "proxy").resolve()),
        trajectory=str(paths["trajectory"].resolve()), figure=str(paths["figure"].resolve()))))
    return report


def check_settings(eta: float, smoothing: float) -> None:
    if not eta > 0:
        raise UserError(f"The DoReMi step size eta must be positive, got {eta}.")
    if not 0 <= smoothing <= 1:
        raise UserError(f"The DoReMi smoothing must lie in [0, 1], got {smoothing}.")


# --- the update -------------------------------------------------------------------------


def excess_losses(proxy_nll: torch.Tensor, reference_nll: torch.Tensor, token_domains: torch.Tensor,
                  previous: np.ndarray) -> np.ndarray:
    """λ: per domain, the mean over its tokens of max(proxy − reference, 0); a domain with no
    token here keeps its `previous` value."""
    k = len(previous)
    excess = (proxy_nll.detach() - reference_nll).clamp_min(0).flatten().double()
    d = token_domains.flatten()
    sums = torch.zeros(k, dtype=torch.float64, device=excess.device).index_add_(0, d, excess)
    n = torch.bincount(d, minlength=k)
    present = (n > 0).cpu().numpy()
    out = previous.copy()
    out[present] = (sums / n.clamp_min(1)).cpu().numpy()[present]
    return out


def update_weights(alpha: np.ndarray, excess: np.ndarray, eta: float, smoothing: float) -> np.ndarray:
    """One exponentiated-gradient step on the domain weights, normalised, then smoothed with
    the uniform distribution."""
    log = np.log(alpha) + eta * excess
    w = np.exp(log - log.max())
    return (1 - smoothing) * w / w.sum() + smoothing / len(w)


# --- the proxy --------------------------------------------------------------------------


class DomainRows:
    """Batches in which every domain is present: row j is a continuous stream of domain
    (j mod k)'s documents, in a seeded order (one `MixedStreams` per domain)."""

    def __init__(self, data: PreparedData, domains: list[str], batch_size: int, seq_len: int, seed: int) -> None:
        if batch_size < len(domains):
            raise UserError(f"DoReMi puts every domain in every batch, but a batch of {batch_size} rows cannot hold "
                            f"{len(domains)} domains; raise the batch size.")
        self.row_domain = torch.arange(batch_size) % len(domains)
        self.streams = [MixedStreams(data, "train", {d: 1.0}, int((self.row_domain == i).sum()), seq_len, seed)
                        for i, d in enumerate(domains)]

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.empty(len(self.row_domain), self.streams[0].seq_len, dtype=torch.int64)
        y = torch.empty_like(x)
        for i, stream in enumerate(self.streams):
            x[self.row_domain == i], y[self.row_domain == i] = stream.batch(step)
        return x, y


@dataclass
class Trajectory:
    domains: list[str]
    weights: np.ndarray  # (steps, k): α after each step's update, the weights that step trained with
    excess: np.ndarray  # (steps, k): λ at each step
    loss: np.ndarray  # (steps,): the weighted proxy loss

    def to_dict(self) -> dict[str, Any]:
        return {"domains": self.domains, "weights_by_step": self.weights.tolist(),
                "excess_loss_by_step": self.excess.tolist(), "loss_by_step": self.loss.tolist()}


class GroupDRO:
    """The proxy's loss hook: from the proxy's per-token NLL of a batch, the reference's on the
    same tokens gives λ and the new α; the loss is Σ_d α_d · (the proxy's mean NLL on domain d).
    It sees whole batches in order (one micro-batch per step), so it carries the reference's
    state from batch to batch as the proxy's step carries the proxy's."""

    def __init__(self, reference: torch.nn.Module, token_domains: torch.Tensor, k: int, eta: float,
                 smoothing: float, precision: str) -> None:
        self.reference, self.token_domains, self.eta, self.smoothing = reference.eval(), token_domains, eta, smoothing
        self.precision = precision
        self.domain_tokens = torch.bincount(token_domains, minlength=k).clamp_min(1)  # the same in every batch
        self.alpha, self.excess = np.full(k, 1.0 / k), np.zeros(k)
        self.state: Any = None

    def __call__(self, nll: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), devices.autocast(x.device, self.precision):
            logits, state = self.reference(x, self.state)
        self.state = detach_state(state)
        self.excess = excess_losses(nll, token_nll(logits, y), self.token_domains, self.excess)
        self.alpha = update_weights(self.alpha, self.excess, self.eta, self.smoothing)
        per_domain = (torch.zeros(len(self.alpha), device=nll.device).index_add_(0, self.token_domains, nll.flatten())
                      / self.domain_tokens)
        return (torch.as_tensor(self.alpha, dtype=per_domain.dtype, device=nll.device) * per_domain).sum()


def train_proxy(p: Plan, reference: torch.nn.Module, domains: list[str], eta: float, smoothing: float,
                run_path: Path, progress: bool) -> Trajectory:
    """The group-DRO loop over the plan's budget, stepping as training does (optimiser,
    precision, gradient scaler, schedule) with the group-DRO loss. The proxy is saved as a run
    directory (config, certificate, budget, metrics and a checkpoint like a run's: `languini
    eval` can score it). It steps in one process on whole batches (no accumulation): the
    weight update needs the whole batch's losses before the step."""
    tcfg, steps, k = replace(p.tcfg, micro_batch_size=p.tcfg.batch_size), p.budget.steps, len(domains)
    dev = devices.resolve(tcfg.device)
    batches = DomainRows(p.data, domains, tcfg.batch_size, p.model_cfg.seq_len, tcfg.seed)
    token_domains = batches.row_domain.to(dev)[:, None].expand(tcfg.batch_size, p.model_cfg.seq_len).flatten()
    torch.manual_seed(tcfg.seed)
    proxy = TrainStep.build(p.family, p.model_cfg, tcfg, dev, World())
    proxy.loss = dro = GroupDRO(reference, token_domains, k, eta, smoothing, proxy.precision)
    run = RunDir.create(run_path, force=True)
    write_plan(run, p)
    weights, excesses, losses = np.zeros((steps, k)), np.zeros((steps, k)), np.zeros(steps)
    counters, start = Counters(), time.perf_counter()
    for step in tqdm(range(steps), desc=f"doremi proxy {p.family.name}/{p.config_name}", unit="step",
                     disable=not progress, file=sys.stderr):
        t0 = time.perf_counter()
        x, y = batches.batch(step)
        counters.wait += time.perf_counter() - t0
        lr = lr_at(step, steps, tcfg)
        loss = proxy.step(x, y, lr)
        weights[step], excesses[step], losses[step] = dro.alpha, dro.excess, loss.item()
        counters.step, counters.loss, counters.elapsed = step + 1, losses[step], time.perf_counter() - start
        if step % tcfg.log_every == 0 or step == steps - 1:
            run.log({"step": step + 1, "lr": lr, "loss": losses[step], "weights": dict(zip(domains, dro.alpha.tolist())),
                     "excess_loss": dict(zip(domains, dro.excess.tolist()))})
    save_checkpoint(run, p, proxy, batches, counters)
    return Trajectory(domains, weights, excesses, losses)


# --- the report -------------------------------------------------------------------------


def _shares(tokens: dict[str, int], domains: list[str]) -> dict[str, float]:
    total = sum(tokens[d] for d in domains)
    return {d: tokens[d] / total for d in domains}


def describe(report: dict[str, Any]) -> str:
    """The report as a few lines for the terminal (the CLI's non-JSON output)."""
    s = report["settings"]
    lines = [f"DoReMi: {s['family']}/{s['config']} reference and proxy at {s['compute_class']}, {s['steps']} proxy "
             f"steps, eta {s['eta']:g}, smoothing {s['smoothing']:g}",
             f"selection cost: {SelectionCost.from_dict(report['cost']).text()}",
             f"{'domain':<14}{'natural':>9}{'weight':>9}{'final':>9}{'mean excess loss':>18}"]
    for d, w in report["weights"].items():
        lines.append(f"{d:<14}{report['natural'][d]:>9.3f}{w:>9.3f}{report['final_weights'][d]:>9.3f}"
                     f"{report['mean_excess_loss'][d]:>18.4f}")
    lines.append(f"written mix spec {report['mix']}, trajectory {report['trajectory']} and figure {report['figure']}")
    return "\n".join(lines)
