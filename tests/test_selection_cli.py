"""The selection commands end to end through the CLI: perplexity pruning charged to the budget
and compared at equal compute against the natural mix (table, figure, a submission that
recomputes the charged budget), D4 on the reference's embeddings, DoReMi's mix spec, and the
mistakes a user can make with them."""

from __future__ import annotations

import json
import random

import pytest
from helpers import fails, invoke
from test_selection import MODEL, clean_text, noise_text, noisy_corpus, prepared

from languini.data.loader import PreparedData
from languini.mix import load_mix

QUIET = "--no-progress"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Clean text and random-character noise (bytes tokenizer), a tiny model, and two FLOP
    classes: a small one for the selection models, a larger one to train the mixes."""
    tmp = tmp_path_factory.mktemp("selection-cli")
    (tmp / "model.toml").write_text(MODEL)
    (tmp / "classes").mkdir()
    (tmp / "classes" / "sel.toml").write_text('[[class]]\nname = "sel-small"\nflops = 1e10\n\n'
                                              '[[class]]\nname = "sel-train"\nflops = 3e10\n')
    data = prepared(tmp, "data", noisy_corpus(300, seed=2))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LANGUINI_CLASSES_DIR", str(tmp / "classes"))
        yield {"tmp": tmp, "data": data.path, "model": tmp / "model.toml"}


@pytest.fixture(scope="module")
def pruned(world):
    out = world["tmp"] / "ppl"
    report = json.loads(invoke("data", "select", "perplexity", world["data"], "--train-reference", "sel-small",
                               "--config", world["model"], "--criterion", "low", "--keep", "0.5", "--out", out,
                               "--charge-selection", "--max-epochs", 16, QUIET, "--json"))
    return report


def test_perplexity_pruning_through_the_cli(world, pruned):
    assert pruned["shares"]["after"]["noise"] == 0.0 < pruned["shares"]["before"]["noise"]
    reasons = {r["reason"] for r in pruned["removed"]}
    assert reasons == {"criterion", "reference-half"}
    spec = load_mix(world["tmp"] / "ppl.toml")
    assert spec.selection["charge"] is True and spec.selection["selection_flops"] > 1e10  # trained + scored
    assert (world["tmp"] / "ppl" / "selection.json").exists()


def test_a_charged_mix_competes_at_equal_compute(world, pruned):
    (world["tmp"] / "natural.toml").write_text('name = "natural"\nweights = "natural"\n')
    out = world["tmp"] / "compare"
    table = json.loads(invoke("mix", "compare", world["tmp"] / "natural.toml", world["tmp"] / "ppl.toml",
                              "--family", "gpt", "--config", world["model"], "--class", "sel-train",
                              "--data", world["data"], "--out", out, QUIET, "--json"))
    rows = {r["mix"]: r for r in table["rows"]}
    assert rows["natural"]["selection"] is None
    sel = rows["ppl"]["selection"]
    assert sel["method"] == "perplexity" and sel["charge"] is True
    budget = json.loads((out / "ppl-seed0" / "budget.json").read_text())
    params = budget["params"]
    assert budget["charge"]["charged"] == sel["selection_flops"]
    assert budget["tokens"] == int((3e10 - sel["selection_flops"]) // (6 * params))
    assert rows["ppl"]["tokens"] < rows["natural"]["tokens"] == json.loads(
        (out / "natural-seed0" / "budget.json").read_text())["tokens_trained"]
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shown = json.loads(invoke("budget", "--class", "sel-train", "--throughput", out / "throughput.json",
                              "--mix", world["tmp"] / "ppl.toml", "--json"))
    assert shown == budget  # `languini budget --mix` shows the charged budget the run trained
    printed = invoke("mix", "compare", world["tmp"] / "natural.toml", world["tmp"] / "ppl.toml", "--family", "gpt",
                     "--config", world["model"], "--class", "sel-train", "--data", world["data"], "--out", out, QUIET)
    assert "perplexity: " in printed and "(charged)" in printed  # finished runs reused, table printed
    # the submission check recomputes the charged budget from the certificate and the charge
    invoke("submit", out / "ppl-seed0", "--out", world["tmp"] / "bundle")
    board = json.loads(invoke("leaderboard", world["tmp"] / "bundle", "--json"))
    (group,) = board["groups"]
    assert not board["invalid"] and group["compute_class"] == "sel-train"
    assert group["rows"][0]["tokens_trained"] == rows["ppl"]["tokens"]
    assert group["rows"][0]["selection"] == sel  # the selection's cost beside every result
    assert "perplexity: " in invoke("leaderboard", world["tmp"] / "bundle") and "(charged)" in printed
    summary = invoke("train", "--family", "gpt", "--config", world["model"], "--class", "sel-train", "--mix",
                     world["tmp"] / "ppl.toml", "--throughput", out / "throughput.json", "--out", world["tmp"] / "one",
                     QUIET)
    assert "data selection      perplexity: " in summary and "(charged)" in summary


def test_d4_and_doremi_through_the_cli(world, pruned):
    report = json.loads(invoke("data", "select", "d4", world["data"], "--embedder", pruned["reference_run"],
                               "--clusters", 4, "--dedup-eps", 0.001, "--keep", 0.5, "--out", world["tmp"] / "d4",
                               QUIET, "--json"))
    assert report["documents"]["kept"] == len(PreparedData(world["tmp"] / "d4").documents("train").ids)
    assert set(report["removed_by_stage"]["total"]) >= {"semdedup_documents", "prototypicality_documents"}
    assert load_mix(world["tmp"] / "d4.toml").selection["method"] == "d4"

    spec = world["tmp"] / "doremi.toml"
    printed = invoke("data", "doremi", world["data"], "--config", world["model"], "--class", "sel-small",
                     "--out", spec, QUIET)
    assert "DoReMi" in printed and "noise" in printed
    mix = load_mix(spec)
    assert set(mix.weights) == {"clean", "noise"} and mix.selection["method"] == "doremi"
    assert spec.with_suffix(".trajectory.png").exists() and spec.with_suffix(".trajectory.json").exists()


def test_selection_mistakes_are_one_sentence(world, pruned):
    data, tmp = world["data"], world["tmp"]
    assert "exactly one" in fails("data", "select", "perplexity", data, "--out", tmp / "x", QUIET)
    assert "exactly one" in fails("data", "select", "perplexity", data, "--reference", pruned["reference_run"],
                                  "--train-reference", "sel-small", "--out", tmp / "x", QUIET)
    assert "already holds a dataset" in fails("data", "select", "perplexity", data, "--reference",
                                              pruned["reference_run"], "--out", tmp / "ppl", QUIET)
    assert "already exists" in fails("data", "select", "perplexity", data, "--reference", pruned["reference_run"],
                                     "--out", tmp / "x", "--mix-out", tmp / "ppl.toml", QUIET)
    assert "must end in .toml" in fails("data", "doremi", data, "--class", "sel-small", "--out", tmp / "w.json",
                                        QUIET)
    assert "Unknown compute class" in fails("data", "doremi", data, "--class", "nope", "--out", tmp / "w.toml",
                                            QUIET)
    assert "at most one per document" in fails("data", "select", "d4", data, "--embedder", pruned["reference_run"],
                                               "--clusters", 10_000, "--out", tmp / "x", QUIET)
    assert not (tmp / "x").exists() and not (tmp / "w.toml").exists()


def test_a_mix_is_refused_on_data_it_was_not_selected_for(world, pruned):
    tmp = world["tmp"]
    rng = random.Random(3)
    other = prepared(tmp, "spm", [{"text": clean_text(rng) if i % 2 else noise_text(rng),
                                   "domain": "clean" if i % 2 else "noise"} for i in range(200)],
                     tokenizer="sentencepiece", vocab_size=400)
    moved = tmp / "moved.toml"
    moved.write_text((tmp / "ppl.toml").read_text().replace('data = "ppl"', f'data = "{other.path}"'))
    out = fails("train", "--family", "gpt", "--config", world["model"], "--class", "sel-train", "--mix", moved,
                "--out", tmp / "refused", QUIET)
    assert "do not transfer across tokenizers" in out and "--any-tokenizer" in out
    out = fails("train", "--family", "gpt", "--config", world["model"], "--class", "sel-train",
                "--mix", tmp / "ppl.toml", "--data", world["data"], "--out", tmp / "refused", QUIET)
    assert "give one of them" in out
    assert not (tmp / "refused").exists()
