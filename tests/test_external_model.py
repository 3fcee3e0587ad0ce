"""A model from outside the repository, named as module.path:Class, runs like a baseline.

This file defines the models; pytest puts tests/ on sys.path, so `test_external_model:BigramLM`
is importable here and (through PYTHONPATH) in the sweep's worker processes.
"""

import json
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn

from helpers import ANY_LOAD, invoke


@dataclass
class BigramConfig:
    vocab_size: int = 256
    seq_len: int = 32
    d_model: int = 16
    oom_above_batch: int = 0  # > 0: pretend the device runs out of memory above this batch


class BigramLM(nn.Module):
    """The smallest model that satisfies the contract: next token from the current one."""

    config_class = BigramConfig

    def __init__(self, config: BigramConfig) -> None:
        super().__init__()
        self.config = config
        self.emb = nn.Embedding(config.vocab_size, config.d_model)
        self.out = nn.Linear(config.d_model, config.vocab_size)

    def forward(self, tokens, state=None):
        if self.config.oom_above_batch and tokens.shape[0] > self.config.oom_above_batch:
            raise torch.OutOfMemoryError("simulated: the batch does not fit")
        return self.out(self.emb(tokens)), None

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, seq_len: int) -> float:
        return 6.0 * self.out.weight.numel()


FAMILY = "test_external_model:BigramLM"


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "bigram.toml"
    path.write_text("d_model = 16\nseq_len = 32\nvocab_size = 256\n[train]\nbatch_size = 8\nlr = 0.01\n")
    return path


def test_outside_model_goes_through_throughput_train_eval_submit(trained, config_file, tmp_path, test_classes):
    cert = tmp_path / "cert.json"
    invoke("throughput", "--family", FAMILY, "--config", config_file, "--data", trained["data"], "--steps", 2,
           "--warmup", 1, "--out", cert, "--no-progress", *ANY_LOAD)
    run = tmp_path / "run"
    r = json.loads(invoke("train", "--family", FAMILY, "--config", config_file, "--data", trained["data"],
                          "--class", "test-1e9", "--throughput", cert, "--out", run, "--no-progress", "--json"))
    assert r["family"] == FAMILY and r["test"]["bits_per_byte"] < r["unigram_bits_per_byte"]
    again = json.loads(invoke("eval", run, "--json", "--no-progress"))
    assert again["test"]["bits_per_byte"] == pytest.approx(r["test"]["bits_per_byte"])
    invoke("submit", run, "--out", tmp_path / "bundle")


def test_sweep_stops_at_out_of_memory_and_certifies_the_best(config_file, tmp_path):
    config_file.write_text(config_file.read_text().replace("vocab_size = 256\n", "vocab_size = 256\noom_above_batch = 4\n"))
    cert = json.loads(invoke("throughput", "--family", FAMILY, "--config", config_file, "--sweep",
                             "--steps", 2, "--warmup", 0, "--no-progress", "--json", *ANY_LOAD))
    rows = cert["sweep"]
    assert [r["batch_size"] for r in rows] == [1, 2, 4, 8]
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "out of memory"]
    best = max(rows[:3], key=lambda r: r["tokens_per_second"])
    assert cert["best_batch_size"] == best["batch_size"] == cert["batch_size"]


def test_calibration_labels_the_budget_and_carries_its_inputs(tmp_path):
    cal = tmp_path / "cal.json"
    c = json.loads(invoke("calibrate", "--config", "mini", "--batch-size", 1, "--steps", 1, "--warmup", 0,
                          "--out", cal, "--no-progress", "--json", *ANY_LOAD))
    y = c["yardstick"]
    assert y["reference_tokens_per_second"] == 238_719  # devices.toml: Languini's RTX 3090 figure for mini
    assert c["device_factor"] == pytest.approx(238_719 / y["local_tokens_per_second"])
    cert = c["certificate"]
    cert_path = tmp_path / "cert.json"
    cert_path.write_text(json.dumps(cert))
    b = json.loads(invoke("budget", "--class", "6h", "--throughput", cert_path, "--calibration", cal, "--json"))
    assert b["mode"] == "calibrated" and b["calibration"]["yardstick"] == y
    assert abs(b["tokens"] - 238_719 * 6 * 3600) <= 1  # the measured device counts as an RTX 3090
