"""Test-wide setup.

Triton kernels run under the interpreter on machines without CUDA. Triton reads
TRITON_INTERPRET when a kernel is decorated, so it is set here, before any test module can
import `baselines.qlstm.kernels`. Tests that touch `datasets` or lm-eval must never reach the
network: the hub switches are forced off and HF_HOME points into a temporary folder.
"""

import json
import os
import shutil
import tempfile

import pytest

try:
    import torch

    _HAS_CUDA = torch.cuda.is_available()
except ImportError:  # pragma: no cover - torch is a hard dependency
    _HAS_CUDA = False

if not _HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="languini-hf-"))


def pytest_collection_modifyitems(config, items):
    if _HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs CUDA (runs in tests/gpu on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def test_classes(tmp_path_factory):
    """Tiny FLOP classes (budgets the same on any machine, a few seconds of training), added
    to the project's own through LANGUINI_CLASSES_DIR, which subprocesses inherit too."""
    from languini.compute import classes_dir

    folder = tmp_path_factory.mktemp("classes")
    for path in classes_dir().glob("*.toml"):
        (folder / path.name).write_text(path.read_text())
    (folder / "tests.toml").write_text(
        '[[class]]\nname = "test-flops"\nflops = 3e10\n\n[[class]]\nname = "test-1e9"\nflops = 1e9\n')
    old = os.environ.get("LANGUINI_CLASSES_DIR")
    os.environ["LANGUINI_CLASSES_DIR"] = str(folder)
    yield folder
    if old is None:
        del os.environ["LANGUINI_CLASSES_DIR"]
    else:
        os.environ["LANGUINI_CLASSES_DIR"] = old


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """One GPT nano trained through the CLI on a tiny two-domain corpus, shared by the tests."""
    from helpers import ANY_LOAD, invoke, tiny_corpus

    tmp = tmp_path_factory.mktemp("e2e")
    corpus = tiny_corpus(tmp / "corpus.jsonl")
    data, run, cert = tmp / "data", tmp / "run", tmp / "cert.json"
    invoke("data", "prepare", corpus, "--out", data, "--vocab-size", 300, "--domain-field", "meta.set",
           "--split", "80/10/10", "--no-progress")
    invoke("throughput", "--family", "gpt", "--config", "nano", "--data", data, "--steps", 3, "--warmup", 1,
           "--out", cert, "--no-progress", *ANY_LOAD)
    out = invoke("train", "--family", "gpt", "--config", "nano", "--data", data, "--class", "flops-3e11",
                 "--throughput", cert, "--out", run, "--no-progress", "--json")
    return {"data": data, "run": run, "cert": cert, "result": json.loads(out)}


@pytest.fixture
def run_copy(trained, tmp_path):
    """A copy of the shared trained run, for a test to edit."""
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    return run
