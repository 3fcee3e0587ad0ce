"""Ctrl-C and SIGTERM in the middle of every command that runs a worker pool, sent as a person
sends them: the command runs in its own session (SIGINT not ignored, as in a terminal's
foreground job) and SIGINT goes to the whole process group, workers included."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import invoke, tiny_corpus

pytestmark = pytest.mark.slow

LANGUINI = [sys.executable, "-m", "languini.cli"]
STOP_WITHIN = 10  # seconds from the signal to the exit


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A corpus big enough that every command below is still at work seconds after it starts."""
    return tiny_corpus(tmp_path_factory.mktemp("interrupts") / "c.jsonl", n_docs=60000)


@pytest.fixture(scope="module")
def data(corpus, trained):
    """The corpus prepared with a large test split (for make-tasks) and the tokenizer of the
    shared tiny run (the reference of the selection)."""
    out = corpus.parent / "data"
    invoke("data", "prepare", corpus, "--out", out, "--tokenizer", trained["data"] / "tokenizer.model",
           "--split", "50/10/40", "--no-progress")
    return out


def children(pid):
    """The processes `pid` started (its workers), from /proc."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_until(proc, ready, what, timeout=120):
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f"the command ended before {what}"
        assert time.time() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


def _as_a_shell_starts_it():
    """A foreground job gets SIGINT's default action, whatever this test process left it at
    (an ignored disposition is inherited across exec, and Python then never raises Ctrl-C)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt(args, tmp_path, ready, what, sig=signal.SIGINT, group=True):
    """Run `languini ARGS`, send `sig` once `ready(proc, stderr so far)` holds, require the exit
    within STOP_WITHIN seconds; returns (exit status, stderr, the worker pids seen before the signal)."""
    stderr = tmp_path / "stderr.txt"  # a file, not a pipe: progress bars would fill a pipe nobody reads yet
    with stderr.open("w") as f:
        proc = subprocess.Popen(LANGUINI + [str(a) for a in args], cwd=tmp_path, stdout=subprocess.DEVNULL,
                                stderr=f, start_new_session=True, preexec_fn=_as_a_shell_starts_it)
    try:
        wait_until(proc, lambda: ready(proc, stderr.read_text(errors="replace")), what)
        workers = children(proc.pid)
        (os.killpg if group else os.kill)(proc.pid, sig)
        try:
            proc.wait(timeout=STOP_WITHIN)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {STOP_WITHIN} s after {sig.name}")
        return proc.returncode, stderr.read_text(), workers
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def temporaries(folder):
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


def assert_stopped(code, stderr, workers, folder, sig=signal.SIGINT):
    assert code == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == f"stopped by {sig.name}; nothing half-written was left behind."
    assert temporaries(folder) == []
    deadline = time.time() + 2  # the OS reaps them a moment after the parent has exited
    while any(map(alive, workers)) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(map(alive, workers)), "a worker outlived the command"


def pool_at_work(out, workers):
    """The output's temporary folder exists and the workers have started."""
    return lambda proc, err: temporaries(out.parent) and len(children(proc.pid)) >= workers


@pytest.mark.parametrize("sig,group", [(signal.SIGINT, True), (signal.SIGTERM, False)],
                         ids=["ctrl-c", "sigterm"])
def test_prepare_stops_on_a_signal(corpus, tmp_path, sig, group):
    out = tmp_path / "data"
    at_work = pool_at_work(out, 2)
    code, err, workers = interrupt(
        ["data", "prepare", corpus, "--out", out, "--vocab-size", 300, "--workers", 2], tmp_path,
        lambda proc, err: at_work(proc, err) and "encode" in err, "a working pool", sig, group)
    assert len(workers) >= 2
    assert_stopped(code, err, workers, tmp_path, sig)
    assert not out.exists()


def random_words(path, megabytes, seed=0):
    """Documents of random letters and spaces: nearly every word is new, so SentencePiece's
    training on them takes many seconds (tiny_corpus's few words train in a moment)."""
    rng = np.random.default_rng(seed)
    with path.open("w") as f:
        for _ in range(megabytes * 1000):
            letters = rng.integers(ord("a"), ord("z") + 1, size=1000, dtype=np.uint8)
            letters[rng.random(1000) < 0.18] = ord(" ")
            f.write(json.dumps({"text": letters.tobytes().decode()}) + "\n")
    return path


@pytest.mark.parametrize("workers", [2])
def test_prepare_stops_at_once_while_training_its_tokenizer(tmp_path, workers):
    """SentencePiece trains on a pool worker, which is ended at once; trained in the command's
    own process (--workers 1) it holds the signal until it returns, longer than STOP_WITHIN
    here (13 s of CPU on this sample, measured on a loaded machine)."""
    corpus = random_words(tmp_path / "words.jsonl", megabytes=9)
    out = tmp_path / "data"
    code, err, workers_seen = interrupt(
        ["data", "prepare", corpus, "--out", out, "--vocab-size", 120000, "--sample-mb", 8, "--workers", workers],
        tmp_path, lambda proc, err: "training a" in err, "the tokenizer's training")
    assert_stopped(code, err, workers_seen, tmp_path)
    assert "encode" not in err and not out.exists()


def test_dedup_stops_on_ctrl_c(data, tmp_path):
    out = tmp_path / "dedup"
    code, err, workers = interrupt(["data", "dedup", data, "--out", out, "--workers", 2], tmp_path,
                                         pool_at_work(out, 2), "a working pool")
    assert_stopped(code, err, workers, tmp_path)
    assert not out.exists()


def test_perplexity_selection_stops_on_ctrl_c(data, trained, tmp_path):
    out = tmp_path / "selected"
    args = ["data", "select", "perplexity", data, "--reference", trained["run"], "--out", out, "--device", "cpu"]
    code, err, workers = interrupt(args, tmp_path, lambda proc, err: "eval:" in err, "scoring")
    assert_stopped(code, err, workers, tmp_path)
    assert not out.exists() and not (tmp_path / "selected.toml").exists()


def test_make_tasks_stops_on_ctrl_c(data, tmp_path):
    out = tmp_path / "tasks"
    # the whole command takes about 2.2 CPU seconds, 0.3 of them imports: stop it half-way through its work
    code, err, workers = interrupt(["data", "make-tasks", data, "--out", out, "--max-examples", 100000],
                                         tmp_path, lambda proc, err: cpu_seconds(proc.pid) > 1, "task making")
    assert_stopped(code, err, workers, tmp_path)
    assert not out.exists()


def test_prepare_on_ray_stops_on_ctrl_c(corpus, tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra")
    out = tmp_path / "data"
    code, err, workers = interrupt(
        ["data", "prepare", corpus, "--out", out, "--vocab-size", 300, "--workers", 2, "--executor", "ray"],
        tmp_path, lambda proc, err: "encode:" in err, "Ray encoding")
    assert_stopped(code, err, workers, tmp_path)
    assert not out.exists()


def test_a_failing_task_ends_the_pool_with_one_sentence(tmp_path):
    """A malformed line met by a worker stops the command as a user error, workers ended."""
    corpus = tiny_corpus(tmp_path / "c.jsonl", n_docs=50)
    with corpus.open("a") as f:
        f.write("{not json\n")
    proc = subprocess.run(LANGUINI + ["data", "prepare", str(corpus), "--out", str(tmp_path / "d"), "--workers", "2",
                                      "--no-progress"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: ") and temporaries(tmp_path) == []
    assert json.loads(corpus.read_text().splitlines()[0])  # the good lines were good
