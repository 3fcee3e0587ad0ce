"""FLOP-class runs on a FLOP axis, and results too short to mean anything said to be so
(issue 16, items 4 to 6), through the command line on real tiny runs."""

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from helpers import TINY_MODEL, fails, invoke, tiny_setup
from languini.cli import main

pytestmark = pytest.mark.slow

LANGUINI = [sys.executable, "-m", "languini.cli"]
CLASSES = ('[[class]]\nname = "flops-3e9"\nflops = 3e9\n\n[[class]]\nname = "flops-1e10"\nflops = 1e10\n\n'
           '[[class]]\nname = "local-3s"\nhours = 0.000833\nreference = "local"\n')


@pytest.fixture(scope="module")
def runs(tmp_path_factory, test_classes):
    """Three FLOP-class runs (10, 32 and 108 steps) and one of a local hours class (3 s of this
    machine), of a tiny model."""
    (test_classes / "issue16.toml").write_text(CLASSES)
    tmp = tiny_setup(tmp_path_factory.mktemp("flops"))
    out = {"tmp": tmp}
    for cls in ("test-1e9", "flops-3e9", "flops-1e10", "local-3s"):
        done = CliRunner().invoke(main, [str(a) for a in (
            "train", "--family", "gpt", "--config", tmp / "model.toml", "--data", tmp / "data", "--class", cls,
            "--batch-size", 8, "--throughput", tmp / "cert.json", "--out", tmp / cls, "--no-progress")])
        assert done.exit_code == 0, done.output
        out[cls] = {"run": tmp / cls, "stdout": done.stdout, "stderr": done.stderr,
                    "result": json.loads((tmp / cls / "result.json").read_text())}
    yield out
    (test_classes / "issue16.toml").unlink()


def test_flop_runs_fit_on_flops(runs, tmp_path):
    flop_runs = [runs[c]["run"] for c in ("test-1e9", "flops-3e9", "flops-1e10")]
    fit = json.loads(invoke("fit", *flop_runs, "--law", "power", "--bootstrap", 0, "--out", tmp_path / "fit.json",
                            "--json"))
    assert fit["compute_unit"] == "FLOPs"
    points = fit["groups"]["gpt"]["points"] + fit["groups"]["gpt"]["excluded"]
    expected = {6 * r["params"] * r["tokens_trained"] for r in (runs[c]["result"] for c in
                                                                 ("test-1e9", "flops-3e9", "flops-1e10"))}
    assert {p["compute"] for p in points} == expected


def test_hour_and_flop_runs_are_not_fitted_together(runs, tmp_path):
    err = fails("fit", runs["flops-3e9"]["run"], runs["local-3s"]["run"], "--law", "power", "--out",
                tmp_path / "fit.json")
    assert "Cannot fit FLOP-denominated runs" in err
    assert str(runs["flops-3e9"]["run"]) in err and str(runs["local-3s"]["run"]) in err


def test_flop_runs_show_flops_not_zero_hours(runs):
    r = runs["flops-3e9"]
    assert f"training FLOPs      {6 * r['result']['params'] * r['result']['tokens_trained']:.4g}" in r["stdout"]
    assert "reference-hours" not in r["stdout"]
    board = invoke("leaderboard", r["run"], runs["local-3s"]["run"])
    flop_table = board.split("### flops-3e9")[1].split("###")[0]
    assert "| training FLOPs |" in flop_table and "reference-hours" not in flop_table
    assert "| reference-hours |" in board.split("### local-3s")[1]


def test_a_run_too_short_to_mean_anything_is_warned_about(runs):
    short = runs["test-1e9"]
    result = short["result"]
    assert result["steps"] == 10
    assert any("fewer than its 100-step warm-up" in w for w in result["warnings"])
    assert result["test"]["bits_per_byte"] >= result["unigram_bits_per_byte"]  # 10 steps learn little
    assert any("not below the unigram baseline" in w for w in result["warnings"])
    assert [f"warning: {w}" for w in result["warnings"]] == [
        line for line in short["stderr"].splitlines() if line.startswith("warning:")]
    board = invoke("leaderboard", short["run"])
    assert "gpt/" in board and " ⚠ |" in board and "⚠ 1: the run trained 10 steps" in board
    (group,) = json.loads(invoke("leaderboard", short["run"], "--json"))["groups"]
    assert group["compute_class"] == "test-1e9" and group["rows"][0]["warnings"]


def test_a_selection_by_a_short_reference_is_warned_about(runs, tmp_path):
    proc = subprocess.run(LANGUINI + [str(a) for a in (
        "data", "select", "perplexity", runs["tmp"] / "data", "--reference", runs["test-1e9"]["run"], "--out",
        tmp_path / "sel", "--device", "cpu", "--no-progress")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "sel" / "selection.json").read_text())
    assert any("trained only 10 steps, fewer than 300" in w for w in report["warnings"])
    assert all(f"warning: {w}" in proc.stderr for w in report["warnings"])
    # the report's table keeps its columns apart (issue 16: "5.43e+034.94e+03")
    rows = [line.split() for line in proc.stdout.splitlines()[3:] if line.split() and line.split()[0] in
            ("story", "verse", "total")]
    assert rows and all(len(row) == 7 and all(q.count("/") == 2 for q in row[5:] if q != "-") for row in rows)


def test_budget_refuses_a_zero_batch_and_a_factor_for_a_local_class(runs):
    cert = runs["tmp"] / "cert.json"
    assert "must be positive" in fails("budget", "--class", "local-3s", "--throughput", cert, "--batch-size", 0)
    err = fails("budget", "--class", "local-3s", "--throughput", cert, "--device-factor", 2)
    assert "counts hours on the measuring machine itself (local)" in err
    assert "takes no device factor" in fails("budget", "--class", "flops-3e9", "--throughput", cert,
                                             "--device-factor", 2)


def test_a_certificate_for_another_config_says_what_differs(runs, tmp_path):
    other = tmp_path / "wider.toml"
    other.write_text(TINY_MODEL.replace("d_model = 32", "d_model = 48"))
    err = fails("train", "--family", "gpt", "--config", other, "--data", runs["tmp"] / "data", "--class", "test-1e9",
                "--batch-size", 8, "--throughput", runs["tmp"] / "cert.json", "--out", tmp_path / "r", "--no-progress")
    assert "(d_model 32 measured vs 48 here, head_dim 16 measured vs 24 here)" in err


def test_a_hub_task_without_network_fails_at_once(runs, tmp_path):
    """No HF_HUB_OFFLINE, and the Hub unreachable (HF_ENDPOINT on a closed local port): one
    sentence, without datasets' five retries with back-off."""
    (tmp_path / "hub.yaml").write_text(
        "task: hub_only\ndataset_path: EleutherAI/lambada_openai\ndataset_name: default\n"
        "output_type: loglikelihood\ntest_split: test\ndoc_to_text: '{{text}}'\ndoc_to_target: ' x'\n")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"
    proc = subprocess.run(LANGUINI + ["eval", str(runs["test-1e9"]["run"]), "--tasks", "hub_only", "--include-path",
                                      str(tmp_path)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "Retrying" not in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("error: lm-eval task 'hub_only' cannot load its data")


def test_no_progress_silences_datasets(runs):
    data, run = runs["tmp"] / "data", runs["test-1e9"]["run"]
    invoke("data", "make-tasks", data, "--max-examples", 5)
    proc = subprocess.run(LANGUINI + ["eval", str(run), "--tasks", "languini_rolling", "--limit", "2",
                                      "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Generating" not in proc.stderr, proc.stderr


def test_a_table_with_other_column_names_is_fitted_through_columns(tmp_path):
    rows = [(n, c, 1.7 + 400 / n ** 0.34 + 400 / (c / (6 * n)) ** 0.28) for n in (1e7, 3e7, 1e8, 3e8)
            for c in (1e17, 1e18, 1e19)]
    table = tmp_path / "chinchilla.csv"
    table.write_text("Model Size,Training FLOP,loss\n" + "".join(f"{n},{c},{loss}\n" for n, c, loss in rows))
    assert "has no params" in fails("fit", table, "--law", "chinchilla", "--out", tmp_path / "f.json")
    fit = json.loads(invoke("fit", table, "--law", "chinchilla", "--columns", 'params=Model Size,compute=Training FLOP',
                            "--bootstrap", 0, "--out", tmp_path / "f.json", "--json"))
    params = fit["groups"]["chinchilla"]["params"]
    assert params["E"] == pytest.approx(1.7, rel=0.02) and params["alpha"] == pytest.approx(0.34, rel=0.05)
    assert "maps the fields" in fails("fit", table, "--law", "chinchilla", "--columns", "size=Model Size", "--out",
                                      tmp_path / "f.json")
