"""What a person's hands do to the commands: a second train on a live run, outputs that cannot
be written, and the smaller mistakes of issue 16 (each refused with one sentence)."""

import json
import signal
import socket
import subprocess
import sys
import time

import pytest

from helpers import fails, invoke, tiny_setup

LANGUINI = [sys.executable, "-m", "languini.cli"]


@pytest.fixture(scope="module")
def small(tmp_path_factory, test_classes):
    return tiny_setup(tmp_path_factory.mktemp("robust"))


def train_args(small, run, cls, *extra):
    return [str(a) for a in ["train", "--family", "gpt", "--config", small / "model.toml", "--data", small / "data",
                             "--class", cls, "--batch-size", 8, "--throughput", small / "cert.json", "--out", run,
                             "--no-progress", *extra]]


def training(run):
    path = run / "metrics.jsonl"
    return path.exists() and path.read_text().strip() != ""


@pytest.mark.slow
def test_force_never_replaces_a_live_run_but_does_an_abandoned_one(small, tmp_path):
    run = tmp_path / "a"
    first = subprocess.Popen(LANGUINI + train_args(small, run, "cpu-2m"), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not training(run):
            assert first.poll() is None and time.time() < deadline, "the first run did not start training"
            time.sleep(0.05)
        second = subprocess.run(LANGUINI + train_args(small, run, "test-1e9", "--force"), capture_output=True,
                                text=True, timeout=120)
        assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr
        assert f"is being trained by pid {first.pid} on host {socket.gethostname()}" in second.stderr
        assert first.poll() is None and (run / "config.toml").exists()  # untouched, still training
        first.send_signal(signal.SIGKILL)  # now abandoned: its lock record stays, its flock went with it
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert (run / ".lock").read_text().split() == [str(first.pid), socket.gethostname()]
    result = json.loads(invoke(*train_args(small, run, "test-1e9", "--force", "--json")))
    assert result["compute_class"] == "test-1e9"
    assert (run / ".lock").read_text() == ""  # released on the way out


def test_a_lock_from_another_machine_is_honoured_until_removed(small, tmp_path):
    run = tmp_path / "b"
    run.mkdir()
    (run / "config.toml").write_text("")
    (run / ".lock").write_text("4242 elsewhere.example\n")
    err = fails(*train_args(small, run, "test-flops", "--force"))
    assert "pid 4242 on host elsewhere.example (another machine: if that process is gone, delete" in err


@pytest.mark.parametrize("command", [
    ["data", "prepare", "builtin:stdlib", "--out", "{bad}"],
    ["throughput", "--family", "gpt", "--config", "nano", "--out", "{bad}/cert.json"],
    ["calibrate", "--out", "{bad}/cal.json"],
    ["fit", "{bad}", "--law", "power", "--out", "{bad}/fit.json"],
    ["data", "make-tasks", "{data}", "--out", "{bad}"],
    ["data", "dedup", "{data}", "--out", "{bad}"],
    ["train", "--family", "gpt", "--config", "nano", "--data", "{data}", "--class", "cpu-10s", "--out", "{bad}"],
], ids=lambda c: " ".join(c[:2]))
@pytest.mark.parametrize("where", ["under-a-file", "read-only"])
def test_an_output_that_cannot_be_written_is_one_sentence(small, tmp_path, command, where):
    (tmp_path / "afile").write_text("not a folder")
    bad = {"under-a-file": tmp_path / "afile" / "sub", "read-only": "/sys/languini-test/out"}[where]
    args = [a.format(bad=bad, data=small / "data") for a in command]
    err = fails(*args)
    assert err.startswith(f"error: Cannot write {bad}") and err.count("\n") == 1, err
    if where == "under-a-file":
        assert f"{tmp_path / 'afile'} is a file, not a folder." in err


def test_a_file_output_that_is_a_folder_is_refused(small, tmp_path):
    err = fails("throughput", "--family", "gpt", "--config", "nano", "--out", tmp_path)
    assert f"Cannot write {tmp_path}: it is a folder, not a file." in err
