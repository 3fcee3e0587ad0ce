"""A run that dies is resumed as the same run: real processes, real signals, exact equality."""

import json
import resource
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from helpers import fails, invoke, tiny_corpus

pytestmark = pytest.mark.slow

LANGUINI = [sys.executable, "-m", "languini.cli"]
MODEL = "n_layer = 1\nd_model = 32\nn_head = 2\nseq_len = 64\nvocab_size = 257\n"


@pytest.fixture(scope="module")
def setup(tmp_path_factory, test_classes):
    """Bytes-tokenised data, a small model, and a FLOP class: the budget is the same on any machine."""
    tmp = tmp_path_factory.mktemp("resume")
    invoke("data", "prepare", tiny_corpus(tmp / "c.jsonl"), "--out", tmp / "data", "--tokenizer", "bytes",
           "--split", "90/5/5", "--no-progress")
    (tmp / "model.toml").write_text(MODEL)
    return tmp


@pytest.fixture(scope="module")
def reference(setup):
    """Uninterrupted runs, trained once per (family, micro-batch) and shared by the tests."""
    runs = {}

    def get(family, micro):
        if (family, micro) not in runs:
            runs[family, micro] = setup / f"whole-{family}-{micro}"
            invoke(*train_args(setup, family, runs[family, micro], micro))
        return runs[family, micro]
    return get


def train_args(setup, family, run, micro):
    args = ["train", "--family", family, "--config", setup / "model.toml", "--data", setup / "data", "--class",
            "test-flops", "--batch-size", 8, "--out", run, "--checkpoint-every", 20, "--no-progress"]
    if micro:
        args += ["--micro-batch-size", micro]
    return [str(a) for a in args]


def last_step(run):
    path = run / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]
    return max(steps, default=0)


def start_and_stop(args, run, sig, after_step):
    """Start training in a real process and send `sig` once it has logged `after_step` steps."""
    proc = subprocess.Popen(LANGUINI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while last_step(run) < after_step and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "training finished before it could be interrupted"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, err


def final_state(run):
    return torch.load(run / "checkpoints" / "last.pt", weights_only=False)["model"]


def assert_same_run(a, b):
    ra, rb = (json.loads((r / "result.json").read_text()) for r in (a, b))
    assert ra["test"]["bits_per_byte"] == rb["test"]["bits_per_byte"]
    assert ra["tokens_trained"] == rb["tokens_trained"]
    sa, sb = final_state(a), final_state(b)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    la = [m for m in map(json.loads, (a / "metrics.jsonl").read_text().splitlines())]
    lb = [m for m in map(json.loads, (b / "metrics.jsonl").read_text().splitlines())]
    assert [(m["step"], m["loss"]) for m in la] == [(m["step"], m["loss"]) for m in lb]


@pytest.mark.parametrize("family,micro", [("gpt", None), ("gpt", 4), ("qlstm", None), ("qlstm", 4)])
def test_sigkill_then_resume_is_the_same_run(setup, reference, tmp_path, family, micro):
    whole, broken = reference(family, micro), tmp_path / "broken"
    code, _ = start_and_stop(train_args(setup, family, broken, micro), broken, signal.SIGKILL, 60)
    assert code == -signal.SIGKILL and not (broken / "result.json").exists()
    invoke("resume", broken, "--no-progress")
    assert_same_run(whole, broken)


def test_an_fp16_run_resumes_with_its_gradient_scaler(setup, tmp_path):
    """CPU autocast runs fp16 too; the scaler's state (its scale, and the growth tracker that
    counts steps since the last overflow) must come back with the checkpoint."""
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    invoke(*train_args(setup, "gpt", whole, None), "--precision", "fp16")
    code, _ = start_and_stop(train_args(setup, "gpt", broken, None) + ["--precision", "fp16"], broken,
                             signal.SIGKILL, 60)
    assert code == -signal.SIGKILL
    invoke("resume", broken, "--no-progress")
    assert_same_run(whole, broken)
    steps = json.loads((whole / "result.json").read_text())["steps"]
    for run in (whole, broken):
        scaler = torch.load(run / "checkpoints" / "last.pt", weights_only=False)["scaler"]
        assert scaler["scale"] == 2.0 ** 16 and scaler["_growth_tracker"] == steps  # no overflow: every step counted


def test_sigterm_checkpoints_and_says_how_to_resume(setup, reference, tmp_path):
    whole, stopped = reference("gpt", None), tmp_path / "stopped"
    code, err = start_and_stop(train_args(setup, "gpt", stopped, None), stopped, signal.SIGTERM, 50)
    assert code == 130 and f"languini resume {stopped}" in err
    state = torch.load(stopped / "checkpoints" / "last.pt", weights_only=False)
    budget = json.loads((stopped / "budget.json").read_text())
    assert last_step(stopped) <= state["counters"]["step"] < budget["steps"]  # checkpointed where it stopped
    invoke("train", *train_args(setup, "gpt", stopped, None)[1:], "--resume")
    assert_same_run(whole, stopped)


def test_a_corrupted_checkpoint_falls_back_to_the_previous_one(setup, reference, tmp_path):
    whole, broken = reference("gpt", 4), tmp_path / "broken"
    start_and_stop(train_args(setup, "gpt", broken, 4), broken, signal.SIGKILL, 60)
    last = broken / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # truncated
    result = subprocess.run(LANGUINI + ["resume", str(broken), "--no-progress"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "last.pt failed its checksum; resumed from previous.pt" in result.stderr
    assert_same_run(whole, broken)


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(setup, reference, tmp_path):
    whole, run = reference("gpt", None), tmp_path / "run"
    start_and_stop(train_args(setup, "gpt", run, None), run, signal.SIGKILL, 30)
    good = (run / "checkpoints" / "last.pt").read_bytes()

    def small_files():  # a real write failure: files may not grow past 64 KiB
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))

    result = subprocess.run(LANGUINI + ["resume", str(run), "--no-progress"], capture_output=True, text=True,
                            preexec_fn=small_files)
    assert result.returncode == 2 and "Could not write a checkpoint" in result.stderr
    assert "Traceback" not in result.stderr
    assert (run / "checkpoints" / "last.pt").read_bytes() == good
    assert not (run / "checkpoints" / "incoming.pt").exists()
    invoke("resume", run, "--no-progress")
    assert_same_run(whole, run)


def test_a_run_in_use_is_refused_and_changes_need_force(setup, tmp_path):
    run = tmp_path / "run"
    args = train_args(setup, "gpt", run, None)
    proc = subprocess.Popen(LANGUINI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while not (run / "checkpoints" / "last.sha256").exists() and proc.poll() is None:
            time.sleep(0.02)
        assert f"in use by pid {proc.pid} on host" in fails("resume", run)
    finally:
        proc.kill()
        proc.wait()
    out = fails(*args, "--resume", "--lr", "0.5")
    assert "train_config changed" in out and "--force" in out


def test_a_shard_that_does_not_match_the_manifest_stops_the_run(setup, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(setup / "data", data)
    shard = data / "train" / "tokens-00000.npy"
    tokens = np.load(shard)
    tokens[100] = (tokens[100] + 1) % 256
    np.save(shard, tokens)
    args = train_args(setup, "gpt", tmp_path / "run", None)
    args[args.index(str(setup / "data"))] = str(data)
    assert "tokens-00000.npy does not match its checksum" in fails(*args)
