"""Everything decided before a run's first step, checked before anything is written.

The model, the data (a mix's, deduplicated if it says so), the training config, the throughput
certificate (measured now unless given) and the budget it buys, and the processes that train.
The number of steps is fixed here: `steps = budget tokens // (batch · seq)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from languini.compute import Budget, Charge, budget_from_certificate, get_class
from languini.config import TrainConfig, train_config
from languini.data.dedup import deduplicated
from languini.data.loader import PreparedData
from languini.data.streams import MixedStreams, StreamBatches
from languini.distributed import World, barrier, broadcast
from languini.errors import UserError, to_stderr
from languini.family import Family, load_family, make_dataclass_strict
from languini.io import read_json
from languini.mix import Mix, parse_mix, train_domain_tokens
from languini.run import RunDir
from languini.throughput import Stability, check_certificate, check_stable, measure, read_certificate


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
    world: World  # the processes that train it (rank 0 alone measures, writes and logs)
    mix: Mix | None = None  # resolved (normalised weights); None: the split as contiguous streams

    def batches(self) -> StreamBatches | MixedStreams:
        if self.mix is None:
            return StreamBatches(self.data.stream("train"), self.tcfg.batch_size, self.model_cfg.seq_len)
        return MixedStreams(self.data, "train", self.mix.weights, self.tcfg.batch_size, self.model_cfg.seq_len,
                            self.tcfg.seed)


def plan(family_name: str, config_name: str, data_dir: str | Path | None, class_name: str,
         train_overrides: dict[str, Any], *, world: World, certificate: dict[str, Any] | None = None,
         calibration: dict[str, Any] | None = None, mix: Mix | None = None, any_tokenizer: bool = False,
         stability: Stability = Stability(), progress: bool = True,
         warn: Callable[[str], None] = to_stderr) -> Plan:
    """Resolve model, data, mix, certificate (measured now unless given) and budget for the
    processes of `world`; write nothing to the run.

    A mix that names its data trains on it (`data_dir` may then be None, or the same folder); a
    mix with a [dedup] table trains on that data deduplicated (made once beside it, then
    reused); a mix selected under another tokenizer is refused unless `any_tokenizer`, and a
    charged selection's cost comes out of the budget. A measurement too unsteady for
    `stability` is refused (or, given, a certificate marked noisy) where the class's budget
    depends on it."""
    family = load_family(family_name)
    data = PreparedData(_data_of(data_dir, mix))
    if mix is not None and mix.dedup is not None:
        data = _deduplicated(data, mix.dedup, progress, world)
    if mix is not None:
        note = mix.check_tokenizer(data, force=any_tokenizer)
        if note and world.is_main:
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
        certificate = _measured_on_main(family, config_name, model_cfg, tcfg, stability.for_class(cls), progress,
                                        world)
    else:
        check_certificate(certificate, family, model_cfg, tcfg)
        check_stable(certificate, cls, stability)
    budget = budget_from_certificate(cls, certificate, calibration=calibration, charge=mix.charge() if mix else None)
    if mix is not None:
        by_domain = train_domain_tokens(data)
        mix = mix.resolve(by_domain)
        mix.check_supply(by_domain, budget.tokens_trained)
    return Plan(family, config_name, model_cfg, tcfg, data, certificate, budget, world, mix)


def plan_of_run(run: RunDir, world: World) -> Plan:
    """The plan a run directory was started with, rebuilt from its files."""
    cfg = run.read_config()
    family = load_family(cfg.family)
    model_cfg = make_dataclass_strict(family.config_class, cfg.model, f"model config of {run.path}")
    tcfg = make_dataclass_strict(TrainConfig, cfg.train, f"training config of {run.path}")
    data = PreparedData(cfg.data)
    cert = read_certificate(run.throughput)
    stored = read_json(run.budget, "Budget")
    budget = budget_from_certificate(get_class(cfg.compute_class), cert, stored.get("calibration"),
                                     charge=Charge.from_dict(stored.get("charge")))
    mix = parse_mix(read_json(run.mix, "Mix"), str(run.mix), "mix") if run.mix.exists() else None
    return Plan(family, cfg.config_name, model_cfg, tcfg, data, cert, budget, world, mix)


def _measured_on_main(family: Family, config_name: str, model_cfg: Any, tcfg: TrainConfig, stability: Stability,
                      progress: bool, world: World) -> dict[str, Any]:
    """Rank 0 measures (on one device, as the protocol says); its refusal stops every rank."""
    measured: dict[str, Any] | str | None = None
    if world.is_main:
        try:
            measured = measure(family, config_name, model_cfg, tcfg, progress=progress, stability=stability)
        except UserError as e:
            measured = str(e)
    measured = broadcast(measured, world)
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


def _deduplicated(parent: PreparedData, settings: dict[str, Any], progress: bool, world: World) -> PreparedData:
    """The deduplicated data, made by rank 0 while the others wait (under torchrun)."""
    made = deduplicated(parent, settings, progress) if world.is_main else None
    barrier(world)
    return made or deduplicated(parent, settings, progress=False)  # made by rank 0 by now: opened, not written
