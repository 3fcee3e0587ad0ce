"""The whole walk through the CLI on a tiny corpus: prepare → throughput → train → eval."""

import json

import pytest

from helpers import fails, invoke

def test_training_spends_exactly_the_budget_and_learns(trained):
    r, run = trained["result"], trained["run"]
    budget = json.loads((run / "budget.json").read_text())
    cert = json.loads(trained["cert"].read_text())
    assert budget["tokens"] == int(3e11 // (6 * cert["params"]))  # flops-3e11: tokens = FLOPs / 6N
    assert r["tokens_trained"] == budget["steps"] * 16 * 128
    assert budget["tokens"] - r["tokens_trained"] < 16 * 128
    losses = [m["loss"] for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
              if "split" not in m]
    assert losses[-1] < losses[0] - 1.0
    assert r["test"]["bits_per_byte"] < r["unigram_bits_per_byte"]


def test_an_hours_class_buys_the_measured_rate_times_the_hours(trained):
    cert = json.loads(trained["cert"].read_text())
    b = json.loads(invoke("budget", "--class", "cpu-10s", "--throughput", trained["cert"], "--json"))
    assert b["tokens"] == int(cert["tokens_per_second"] * 10)  # ten seconds of local compute
    assert b["steps"] == b["tokens"] // (16 * 128) and b["mode"] == "local"


def test_result_json_is_complete(trained):
    r = json.loads((trained["run"] / "result.json").read_text())
    for key in ("family", "config", "params", "compute_class", "budget_tokens", "tokens_trained",
                "reference_hours", "unigram_bits_per_byte", "data", "mix"):
        assert key in r, key
    t = r["test"]
    for key in ("bits_per_byte", "token_perplexity", "char_perplexity", "tokens", "bytes", "chars"):
        assert key in t and t[key] > 0, key
    assert set(t["by_domain"]) == {"story", "verse"}
    assert t["protocol"]["whole_split"] is True
    assert r["family"] == "gpt" and r["compute_class"] == "flops-3e11"
    assert list((trained["run"] / "tb").glob("events.out.tfevents.*"))
    assert (trained["run"] / "checkpoints" / "last.pt").exists()


def test_eval_command_reproduces_the_result(trained):
    out = json.loads(invoke("eval", trained["run"], "--json", "--no-progress"))
    assert out["test"]["bits_per_byte"] == pytest.approx(trained["result"]["test"]["bits_per_byte"], rel=1e-9)
    assert json.loads((trained["run"] / "eval-test.json").read_text()) == out


def test_bits_per_byte_is_consistent_with_perplexity(trained):
    t = trained["result"]["test"]
    import math

    nll_sum = math.log(t["token_perplexity"]) * t["tokens"]
    assert t["bits_per_byte"] == pytest.approx(nll_sum / math.log(2) / t["bytes"], rel=1e-9)
    assert t["char_perplexity"] == pytest.approx(math.exp(nll_sum / t["chars"]), rel=1e-9)


def test_qlstm_trains_with_carried_state_through_the_same_commands(trained, tmp_path):
    run = tmp_path / "qlstm"
    r = json.loads(invoke("train", "--family", "qlstm", "--config", "nano", "--data", trained["data"],
                          "--class", "flops-3e11", "--batch-size", 8, "--micro-batch-size", 4, "--out", run,
                          "--no-progress", "--json"))
    cert = json.loads((run / "throughput.json").read_text())
    assert cert["implementation"] == "block" and cert["micro_batch_size"] == 4
    assert r["test"]["protocol"]["method"] == "carried-state streams"
    losses = [m["loss"] for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
              if "split" not in m]
    assert losses[-1] < losses[0] - 1.0


def test_user_mistakes_are_one_sentence(trained, tmp_path):
    data, cert = trained["data"], trained["cert"]
    out = fails("train", "--family", "gpt", "--config", "micro", "--data", data, "--class", "cpu-10s",
                "--throughput", cert, "--out", tmp_path / "r")
    assert "different model config" in out
    out = fails("train", "--family", "gpt", "--config", "nano", "--data", data, "--class", "cpu-10s",
                "--throughput", cert, "--out", trained["run"])
    assert "already exists" in out
    assert "Unknown compute class" in fails("train", "--family", "gpt", "--config", "nano", "--data", data,
                                            "--class", "3h", "--out", tmp_path / "r")
    assert "not a run directory" in fails("eval", tmp_path / "nowhere")
    truncated = tmp_path / "cert.json"
    truncated.write_text(trained["cert"].read_text()[:50])
    assert "not valid JSON" in fails("budget", "--class", "cpu-1m", "--throughput", truncated)
    assert "not a run directory" in fails("eval", tmp_path)
    assert not (tmp_path / "r").exists()
