"""Training precision: fp16 with a gradient scaler by default on CUDA, recorded and enforced.

CPU autocast runs fp16 too, so the scaler's path (scale, unscale, skip on overflow, back off)
is exercised here for real; tests/gpu/ repeats training on CUDA.
"""

from __future__ import annotations

import pytest
import torch

from languini import device as devices
from languini import throughput
from languini.compute import budget_from_certificate, compute_budget, get_class
from languini.config import TrainConfig, train_config
from languini.errors import UserError
from languini.family import config_hash, load_family
from languini.distributed import World
from languini.step import TrainStep
from languini.throughput import check_certificate


def test_auto_is_fp16_on_cuda_and_fp32_elsewhere():
    assert devices.training_precision("auto", torch.device("cuda")) == "fp16"
    assert devices.training_precision("auto", torch.device("cpu")) == "fp32"
    assert devices.training_precision("bf16", torch.device("cuda")) == "bf16"
    assert devices.dtype_name(torch.device("cuda"), "auto") == "autocast-float16"
    assert devices.dtype_name(torch.device("cuda")) == "autocast-bfloat16"  # evaluation: no scaler, bf16
    with pytest.raises(UserError, match="Unknown precision 'half'"):
        TrainConfig(precision="half")


def nano(precision: str) -> TrainStep:
    fam = load_family("gpt")
    cfg, train = fam.config("nano", vocab_size=64)
    torch.manual_seed(0)
    return TrainStep.build(fam, cfg, train_config(train, {"batch_size": 2, "device": "cpu",
                                                          "precision": precision}), torch.device("cpu"), World())


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 64, (2, 128), generator=gen), torch.randint(0, 64, (2, 128), generator=gen)


def params(t: TrainStep) -> list[torch.Tensor]:
    return [p.detach().clone() for p in t.model.parameters()]


def test_fp16_steps_go_through_the_gradient_scaler():
    t = nano("fp16")
    assert t.precision == "fp16" and t.scaler.is_enabled()
    t.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 40)  # fp16 gradients overflow at this scale
    before = params(t)
    loss = t.step(*batch(), lr=1e-3)
    assert torch.isfinite(loss)
    assert all(torch.equal(a, b) for a, b in zip(before, params(t)))  # the overflowing step was skipped
    assert t.scaler.get_scale() == 2.0 ** 39  # and the scale backed off
    t.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    t.step(*batch(), lr=1e-3)
    assert not all(torch.equal(a, b) for a, b in zip(before, params(t)))


def test_fp32_steps_are_unscaled():
    t = nano("fp32")
    assert t.precision == "fp32" and not t.scaler.is_enabled()
    before = params(t)
    t.step(*batch(), lr=1e-3)
    assert not all(torch.equal(a, b) for a, b in zip(before, params(t)))
    assert t.scaler.state_dict() == {}


@pytest.mark.parametrize("precision,dtype", [("auto", "float32"), ("fp16", "autocast-float16")])
def test_the_certificate_records_the_precision_and_training_in_another_is_refused(precision, dtype):
    fam = load_family("gpt")
    cfg, train = fam.config("nano", vocab_size=64)
    tcfg = train_config(train, {"batch_size": 2, "device": "cpu", "precision": precision})
    cert = throughput.measure(fam, "nano", cfg, tcfg, warmup=0, steps=1, progress=False,
                              stability=throughput.Stability(allow_noisy=True))  # the suite may share the machine
    assert cert["dtype"] == dtype and cert["precision"] == devices.precision_of_dtype_name(dtype)
    assert budget_from_certificate(get_class("cpu-10s"), cert).precision == cert["precision"]
    check_certificate(cert, fam, cfg, tcfg)
    other = train_config(train, {"batch_size": 2, "device": "cpu",
                                 "precision": "bf16" if precision == "fp16" else "fp16"})
    with pytest.raises(UserError, match=f"measured in {cert['precision']}, training would run in"):
        check_certificate(cert, fam, cfg, other)


def test_certificates_from_before_the_precision_key_read_it_from_their_dtype():
    fam = load_family("gpt")
    cfg, train = fam.config("nano", vocab_size=64)
    old = {"model": "gpt", "config_hash": config_hash(cfg), "batch_size": 2, "seq_len": 128, "device": "cpu",
           "tokens_per_second": 1e4, "dtype": "float32"}
    check_certificate(old, fam, cfg, train_config(train, {"batch_size": 2, "device": "cpu"}))
    assert budget_from_certificate(get_class("cpu-10s"), {**old, "dtype": "autocast-bfloat16"}).precision == "bf16"


def test_a_calibration_timed_in_another_precision_is_refused():
    calibration = {"reference": "rtx3090", "device_factor": 0.5,
                   "yardstick": {"precision": "bf16", "dtype": "autocast-bfloat16"}}
    b = compute_budget(get_class("6h"), 1e5, 128, 512, "NVIDIA H200", calibration, precision="bf16")
    assert b.precision == "bf16" and b.mode == "calibrated"
    with pytest.raises(UserError, match="yardstick in bf16, the throughput was measured in fp16"):
        compute_budget(get_class("6h"), 1e5, 128, 512, "NVIDIA H200", calibration, precision="fp16")
