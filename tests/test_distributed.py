"""torchrun with 2 CPU processes (gloo) trains the same run as 1 process with accumulation."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from helpers import ANY_LOAD, invoke, tiny_corpus

pytestmark = pytest.mark.slow

MODEL = "n_layer = 1\nd_model = 32\nn_head = 2\nseq_len = 64\nvocab_size = 257\n"


def losses(run):
    return [(m["step"], m["loss"]) for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if "split" not in m]


@pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None, reason="no torchrun")
@pytest.mark.parametrize("family", ["gpt", "qlstm"])
def test_two_processes_match_one_with_accumulation(tmp_path, family, monkeypatch):
    invoke("data", "prepare", tiny_corpus(tmp_path / "c.jsonl"), "--out", tmp_path / "data", "--tokenizer",
           "bytes", "--split", "90/5/5", "--no-progress")
    (tmp_path / "model.toml").write_text(MODEL)
    (tmp_path / "classes").mkdir()
    (tmp_path / "classes" / "t.toml").write_text('[[class]]\nname = "t"\nflops = 6e9\n')
    monkeypatch.setenv("LANGUINI_CLASSES_DIR", str(tmp_path / "classes"))
    invoke("throughput", "--family", family, "--config", tmp_path / "model.toml", "--data", tmp_path / "data",
           "--batch-size", 8, "--micro-batch-size", 4, "--steps", 1, "--warmup", 0, "--out", tmp_path / "cert.json",
           "--no-progress", *ANY_LOAD)
    common = ["train", "--family", family, "--config", tmp_path / "model.toml", "--data", tmp_path / "data",
              "--class", "t", "--throughput", tmp_path / "cert.json", "--batch-size", 8, "--micro-batch-size", 4,
              "--log-every", 1, "--no-progress"]
    invoke(*common, "--out", tmp_path / "one")
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    proc = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m", "languini.cli",
                           *map(str, common), "--out", str(tmp_path / "two")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert [s for s, _ in one] == [s for s, _ in two] and len(one) > 20
    for (_, a), (_, b) in zip(one, two):
        assert b == pytest.approx(a, rel=1e-4)
    r1, r2 = (json.loads((tmp_path / r / "result.json").read_text()) for r in ("one", "two"))
    assert r2["tokens_trained"] == r1["tokens_trained"]
    assert r2["test"]["tokens"] == r1["test"]["tokens"]
    assert r2["test"]["bits_per_byte"] == pytest.approx(r1["test"]["bits_per_byte"], rel=1e-3)
