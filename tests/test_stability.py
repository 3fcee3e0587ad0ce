"""The stability guard of the throughput measurement: a busy machine's rate is refused, or
certified marked noisy on request, and a noisy certificate never quietly buys an hours budget.

On a CPU a round is steady when the measurement got --min-cpu-share of the CPU time its threads
could use; no process gets 100 times that, so a minimum of 100 makes every measurement unsteady
and these tests exercise the guard deterministically on any machine (the GPU's criterion, the
spread of step times, is tested on rounds directly). benchmarks/throughput_repeatability.py
measures how often it catches a real competing load.
"""

import json

import pytest
from helpers import fails, invoke, tiny_corpus

from languini.throughput import Stability, noisy_reason, tokens_per_second_of

MODEL = "n_layer = 1\nd_model = 32\nn_head = 2\nseq_len = 64\nvocab_size = 257\n"
QUIET = "--no-progress"
UNSTEADY = ("--min-cpu-share", 100, "--max-rounds", 2)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Bytes-tokenised data, a tiny model, an hours class of a few steps and a FLOP class."""
    tmp = tmp_path_factory.mktemp("stability")
    invoke("data", "prepare", tiny_corpus(tmp / "c.jsonl"), "--out", tmp / "data", "--tokenizer", "bytes",
           "--split", "90/5/5", QUIET)
    (tmp / "model.toml").write_text(MODEL)
    (tmp / "classes").mkdir()
    # 1.8 s of this machine: a step of 1×64 tokens even at the 36 tokens/s of a very busy one
    (tmp / "classes" / "s.toml").write_text('[[class]]\nname = "blink"\nhours = 5e-4\nreference = "local"\n\n'
                                            '[[class]]\nname = "flop"\nflops = 1e9\n')
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LANGUINI_CLASSES_DIR", str(tmp / "classes"))
        yield tmp


def model_args(setup):
    return ("--family", "gpt", "--config", setup / "model.toml", "--data", setup / "data", "--batch-size", 1)


def measure(setup, *extra):
    return ("throughput", *model_args(setup), "--steps", 3, "--warmup", 0, QUIET, *extra)


def test_an_unsteady_measurement_is_refused_saying_how_busy(setup, tmp_path):
    out = fails(*measure(setup, *UNSTEADY, "--out", tmp_path / "cert.json"))
    assert out.startswith("error: The machine is busy: ") and out.count("\n") == 1
    assert "in the last of 2 measuring rounds the measurement got " in out
    assert "of the CPU time its threads could use, under the 10000% minimum" in out
    assert "load average" in out and "--allow-noisy" in out
    assert not (tmp_path / "cert.json").exists()


def test_allowed_it_is_certified_noisy_with_every_round_and_the_load(setup):
    cert = json.loads(invoke(*measure(setup, *UNSTEADY, "--allow-noisy", "--json")))
    assert cert["noisy"] is True and cert["min_cpu_share"] == 100
    rounds = cert["rounds"]
    assert len(rounds) == 2 and all(len(r["step_times"]) == 3 for r in rounds)
    assert all(0 < r["cpu_share"] < 100 for r in rounds)  # measured, each round
    assert cert["step_times"] == rounds[-1]["step_times"] and cert["cpu_share"] == rounds[-1]["cpu_share"]
    assert "under the 10000% minimum in the last of 2 rounds, at load average" in noisy_reason(cert)
    assert cert["tokens_per_second"] == pytest.approx(tokens_per_second_of(cert))  # the last round is certified
    load = cert["load"]
    assert len(load["cpu_load_average"]) == 3 and load["cpu_count"] >= 1
    assert load["gpu_processes"] is None  # CPU: no GPU to look at


def test_a_steady_measurement_stops_after_one_round(setup):
    cert = json.loads(invoke(*measure(setup, "--min-cpu-share", 0, "--json")))
    assert cert["noisy"] is False and len(cert["rounds"]) == 1 and cert["cpu_share"] > 0


def test_on_a_gpu_the_spread_of_step_times_decides():
    """A round without a CPU share (a GPU's) is steady when its step times spread within the
    tolerance; a certificate from before the CPU share was measured is judged the same way."""
    guard = Stability(tolerance=0.1, min_cpu_share=0.8)
    assert guard.unsteady({"spread": 0.05, "cpu_share": None}) is None
    assert guard.unsteady({"spread": 0.25, "cpu_share": None}) == ("its step times spread by 25.0% (p90/p10), "
                                                                    "over the 10.0% tolerance")
    assert guard.unsteady({"spread": 0.25}) is not None  # an older certificate: no cpu_share key
    assert guard.unsteady({"spread": 0.25, "cpu_share": 0.95}) is None  # a CPU: the share decides
    assert "got 47% of the CPU time" in guard.unsteady({"spread": 0.01, "cpu_share": 0.47})


def test_a_nonsense_tolerance_is_one_sentence(setup):
    assert "must be a number >= 0" in fails(*measure(setup, "--spread-tolerance", -1))
    assert "at least 1" in fails(*measure(setup, "--max-rounds", 0))
    assert "minimum CPU share must be a number >= 0" in fails(*measure(setup, "--min-cpu-share", -0.5))


def test_a_noisy_certificate_buys_an_hours_budget_only_when_allowed_and_fails_submit(setup, tmp_path):
    cert = tmp_path / "cert.json"
    invoke(*measure(setup, *UNSTEADY, "--allow-noisy", "--out", cert))
    train = ("train", *model_args(setup), "--class", "blink", "--throughput", cert, QUIET)
    out = fails(*train, "--out", tmp_path / "refused")
    assert "certificate is marked noisy" in out and "class 'blink' buys tokens by it" in out
    assert not (tmp_path / "refused").exists()
    invoke(*train, "--out", tmp_path / "run", "--allow-noisy")
    out = fails("submit", tmp_path / "run", "--out", tmp_path / "bundle")
    assert "stability: the certificate is marked noisy" in out and "1 check(s) failed" in out
    board = json.loads(invoke("leaderboard", tmp_path / "run", "--json"))
    assert any(r.startswith("stability:") for r in board["invalid"][0]["reasons"])


def test_a_busy_machine_stops_training_in_hours_but_not_in_flops(setup, tmp_path):
    train = ("train", *model_args(setup), QUIET, *UNSTEADY)
    out = fails(*train, "--class", "blink", "--out", tmp_path / "hours")
    assert "The machine is busy" in out and not (tmp_path / "hours").exists()
    result = json.loads(invoke(*train, "--class", "flop", "--out", tmp_path / "flops", "--json"))
    cert = json.loads((tmp_path / "flops" / "throughput.json").read_text())
    assert len(cert["rounds"]) == 1 and cert["noisy"] is True  # timed once, and said so
    assert result["budget_mode"] == "flops"
    invoke("submit", tmp_path / "flops", "--out", tmp_path / "bundle")  # the FLOP budget never rested on it


@pytest.mark.parametrize("command,args", [
    (("data", "select", "perplexity"), ("--train-reference", "blink", "--out", "ppl")),
    (("data", "doremi"), ("--class", "blink", "--out", "weights.toml")),
])
def test_the_selection_commands_measure_their_reference_under_the_stability_options(setup, tmp_path, command, args):
    """Both train a reference for a class in hours, so its rate passes the same guard as `train`'s."""
    args = tuple(tmp_path / a if a in ("ppl", "weights.toml") else a for a in args)
    data = tmp_path / "data"  # two domains: DoReMi weighs them
    invoke("data", "prepare", setup / "c.jsonl", "--out", data, "--tokenizer", "bytes", "--split", "90/5/5",
           "--domain-field", "meta.set", QUIET)
    out = fails(*command, data, "--family", "gpt", "--config", setup / "model.toml", *args, QUIET, *UNSTEADY)
    assert "The machine is busy" in out and "last of 2 measuring rounds" in out and "--allow-noisy" in out
