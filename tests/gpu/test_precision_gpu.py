"""Training precision on CUDA: fp16 with a gradient scaler by default, bf16 on request, both
certified as what they are and both learning."""

from __future__ import annotations

import pytest
import torch

from languini import throughput
from languini.config import train_config
from languini.family import load_family
from languini.distributed import World
from languini.step import TrainStep

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("family", ["gpt", "qlstm"])
@pytest.mark.parametrize("precision,scaled", [("auto", True), ("bf16", False)])
def test_cuda_training_precision(family, precision, scaled):
    fam = load_family(family)
    cfg, train = fam.config("micro", vocab_size=256)
    tcfg = train_config(train, {"batch_size": 8, "device": "cuda", "precision": precision})
    torch.manual_seed(0)
    t = TrainStep.build(fam, cfg, tcfg, torch.device("cuda"), World())
    assert t.precision == ("fp16" if precision == "auto" else "bf16") and t.scaler.is_enabled() == scaled
    x = torch.arange(8 * (cfg.seq_len + 1)).remainder(17).view(8, -1)  # a pattern the model can learn
    losses = [t.step(x[:, :-1], x[:, 1:], lr=2e-3).item() for _ in range(40)]
    assert all(map(torch.isfinite, map(torch.tensor, losses))) and losses[-1] < 0.5 * losses[0]
    cert = throughput.measure(fam, "micro", cfg, tcfg, warmup=1, steps=2, progress=False)
    assert cert["precision"] == t.precision
    assert cert["dtype"] == ("autocast-float16" if scaled else "autocast-bfloat16")
