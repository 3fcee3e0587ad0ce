"""Submissions and the leaderboard: a good run passes; edited files are caught and named."""

import json

import pytest

from helpers import edit_json, fails, invoke
from languini.leaderboard import check


def test_a_good_run_submits_and_leads(trained, tmp_path):
    report = json.loads(invoke("submit", trained["run"], "--out", tmp_path / "bundle", "--json"))
    assert set(report["files"]) >= {"result.json", "throughput.json", "budget.json", "data_manifest.json"}
    board = json.loads(invoke("leaderboard", tmp_path / "bundle", "--json"))
    assert board["invalid"] == []
    (group,) = board["groups"]
    assert group["compute_class"] == "flops-3e11" and group["rows"][0]["family"] == "gpt"
    assert group["rows"][0]["run"] == "bundle"
    assert "### flops-3e11 · data (evaluation " in invoke("leaderboard", tmp_path / "bundle")


def test_a_raised_rate_is_caught(run_copy, tmp_path):
    edit_json(run_copy / "throughput.json", lambda c: c.update(tokens_per_second=c["tokens_per_second"] * 2))
    out = fails("submit", run_copy, "--out", tmp_path / "b")
    assert "certificate: tokens_per_second" in out
    assert not (tmp_path / "b").exists()


def test_fewer_claimed_parameters_buy_a_budget_that_was_not_trained(run_copy):
    # the run's class is a FLOP class: tokens = FLOPs / (6 · parameters)
    edit_json(run_copy / "throughput.json", lambda c: c.update(params=c["params"] // 2))
    problems = check(run_copy).problems
    assert any(p.startswith("certificate: params") for p in problems)
    assert any(p.startswith("budget: tokens recomputed") for p in problems)
    assert any(p.startswith("tokens: trained") for p in problems)


def test_a_swapped_config_is_caught(run_copy):
    edit_json(run_copy / "throughput.json", lambda c: c.update(config_hash="0123456789abcdef"))
    assert any(p.startswith("config-hash") for p in check(run_copy).problems)


def test_nan_and_partial_evaluation_are_caught(run_copy):
    def broken(r):
        r["test"]["char_perplexity"] = float("nan")
        r["test"]["tokens"] -= 10
    path = run_copy / "result.json"
    obj = json.loads(path.read_text())
    broken(obj)
    path.write_text(json.dumps(obj))  # json.dumps writes NaN, as a careless script would
    problems = check(run_copy).problems
    assert any(p.startswith("metrics") for p in problems)
    assert any(p.startswith("evaluation: scored") for p in problems)


def test_an_unfinished_run_is_refused(run_copy, tmp_path):
    (run_copy / "result.json").unlink()
    assert "finished: result.json is missing" in fails("submit", run_copy, "--out", tmp_path / "b")


def test_a_bundle_edited_after_submission_is_listed_apart(trained, tmp_path):
    invoke("submit", trained["run"], "--out", tmp_path / "bundle")
    edit_json(tmp_path / "bundle" / "result.json", lambda r: r["test"].update(bits_per_byte=0.5))
    board = json.loads(invoke("leaderboard", tmp_path / "bundle", trained["run"], "--json"))
    assert [len(g["rows"]) for g in board["groups"]] == [1]
    assert "checksums: result.json" in board["invalid"][0]["reasons"][0]
    assert "Invalid entries" in invoke("leaderboard", tmp_path / "bundle")


def test_a_certificate_from_another_model_is_refused(trained, tmp_path):
    cert = tmp_path / "cert.json"
    edit = json.loads(trained["cert"].read_text())
    edit["model"] = "qlstm"
    cert.write_text(json.dumps(edit))
    out = fails("train", "--family", "gpt", "--config", "nano", "--data", trained["data"], "--class", "cpu-10s",
                "--throughput", cert, "--out", tmp_path / "r")
    assert "for family 'qlstm'" in out


@pytest.mark.parametrize("content", [None, '{"tokens_per_second": 5', '{"batch_size": 4}'])
def test_missing_truncated_or_incomplete_certificates(tmp_path, content):
    cert = tmp_path / "cert.json"
    if content is not None:
        cert.write_text(content)
    out = fails("budget", "--class", "cpu-1m", "--throughput", cert)
    assert any(s in out for s in ("not found", "not valid JSON", "lacks the key"))
