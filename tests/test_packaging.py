"""languini installed from a wheel works outside the checkout.

The wheel is built as a user would (`pip wheel .`, from a copy of the checkout, since a build
writes build/ and *.egg-info beside its sources), installed into a fresh virtual environment
whose other dependencies come from this one's site-packages (a path in a .pth file, so this
environment's own editable languini is not imported), and the quick start is run with that
environment's `languini` from a folder outside the checkout.
"""

import json
import math
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml
from helpers import tiny_corpus

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BUILD_INPUTS = ("pyproject.toml", "README.md", "languini", "baselines", "compute_classes", "eval")
SHIPPED = ("compute_classes", "eval")  # top-level folders of the checkout, inside the package once installed


def run(*args, **kwargs) -> str:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-4000:])
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    run(sys.executable, "-m", "pip", "wheel", src, "--no-deps", "--no-build-isolation", "--no-index", "-q",
        "-w", tmp / "dist")
    (built,) = (tmp / "dist").glob("languini-*.whl")
    return built


def test_the_wheel_holds_every_module_and_shipped_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    code = {p.relative_to(ROOT).as_posix() for top in ("languini", "baselines") for p in (ROOT / top).rglob("*")
            if p.suffix in (".py", ".toml") and "__pycache__" not in p.parts}
    data = {f"languini/{p.relative_to(ROOT).as_posix()}" for top in SHIPPED for p in (ROOT / top).rglob("*")
            if p.is_file()}
    assert "languini/compute_classes/cpu.toml" in data and "languini/eval/tasks/_rolling_template_yaml" in data
    assert sorted((code | data) - names) == []
    assert not any(n.split("/")[0] in SHIPPED for n in names)  # no top-level `eval` in site-packages


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment holding the wheel; returns its bin folder."""
    venv = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "test-environment.pth").write_text("".join(f"{p}\n" for p in ours))
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel)
    return venv / "bin"


def test_the_installed_wheel_runs_the_quick_start_outside_the_checkout(installed, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LANGUINI_CLASSES_DIR")}

    def languini(*args) -> dict:
        return json.loads(run(installed / "languini", *args, "--json", cwd=tmp_path, env=env))

    where = run(installed / "python", "-c", "import languini; print(languini.__file__)", cwd=tmp_path, env=env)
    assert Path(where).resolve().is_relative_to(installed.parent.resolve())
    assert {"cpu-10s", "6h", "flops-3e11"} <= {c["name"] for c in languini("classes")}
    tiny_corpus(tmp_path / "corpus.jsonl")
    languini("data", "prepare", "corpus.jsonl", "--out", "data", "--vocab-size", 300, "--no-progress")
    tasks = languini("data", "make-tasks", "data")
    assert set(tasks["tasks"]) == {"languini_rolling", "languini_cloze"} and min(tasks["examples"].values()) > 0
    task = yaml.safe_load((tmp_path / "data" / "eval_tasks" / "languini_rolling.yaml").read_text())
    template = Path(task["include"]).resolve()
    assert template.is_file() and template.is_relative_to(installed.parent.resolve())  # the installed one
    # --allow-noisy: the measurement here shares the machine with the rest of the suite
    result = languini("train", "--family", "gpt", "--config", "nano", "--data", "data", "--class", "cpu-10s",
                      "--out", "run", "--no-progress", "--allow-noisy")
    assert result["compute_class"] == "cpu-10s" and result["budget_mode"] == "local"
    assert result["tokens_trained"] > 0 and math.isfinite(result["test"]["bits_per_byte"])
    assert (tmp_path / "run" / "result.json").is_file()
