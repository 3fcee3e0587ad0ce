"""DoReMi: the weight update against hand-computed numbers, batches that always hold every
domain, an unlearnable noise domain weighted below its natural share end to end, and a mix
that refuses data tokenized otherwise."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from test_selection import clean_text, prepared, setup  # noqa: F401  (setup is a fixture)

from languini.selection.doremi import DomainRows, describe, doremi, excess_losses, update_weights
from languini.errors import UserError
from languini.mix import load_mix
from languini.run import RunDir


def test_the_update_matches_hand_computed_weights():
    # exp(0.5), exp(0), exp(1) normalised = 0.3071961, 0.1863238, 0.5064801; then 0.999·α + 0.001/3
    alpha = update_weights(np.full(3, 1 / 3), np.array([0.5, 0.0, 1.0]), eta=1.0, smoothing=1e-3)
    assert alpha == pytest.approx([0.3072222, 0.1864708, 0.5063070], abs=1e-6)
    # from there, eta 2 and no smoothing: α·exp(2λ) = 0.3752430, 0.2781818, 0.5063070 over 1.1597318
    alpha = update_weights(alpha, np.array([0.1, 0.2, 0.0]), eta=2.0, smoothing=0.0)
    assert alpha == pytest.approx([0.3235600, 0.2398674, 0.4365726], abs=1e-6)


def test_excess_loss_is_clipped_per_domain_and_an_absent_domain_keeps_its_value():
    proxy = torch.tensor([[2.0, 1.0, 3.0], [1.0, 4.0, 0.5]])
    reference = torch.tensor([[1.0, 2.0, 1.0], [1.0, 1.0, 1.0]])
    domains = torch.tensor([[0, 0, 0], [1, 1, 1]])  # domain 2 is not in this batch
    # domain 0: max(1, 0) = 1, max(-1, 0) = 0, max(2, 0) = 2 → mean 1; domain 1: 0, 3, 0 → mean 1
    assert excess_losses(proxy, reference, domains, np.array([9.0, 9.0, 0.7])).tolist() == [1.0, 1.0, 0.7]


def test_every_batch_holds_every_domain_in_continuous_rows(setup):  # noqa: F811
    rows = DomainRows(setup["data"], ["clean", "noise"], batch_size=5, seq_len=16, seed=0)
    assert rows.row_domain.tolist() == [0, 1, 0, 1, 0]
    x0, y0 = rows.batch(0)
    x1, _ = rows.batch(1)
    assert (y0[:, :-1] == x0[:, 1:]).all() and (x1[:, 0] == y0[:, -1]).all()
    assert [s.realised_shares() for s in rows.streams] == [{"clean": 1.0}, {"noise": 1.0}]
    with pytest.raises(UserError, match="every domain in every batch"):
        DomainRows(setup["data"], ["clean", "noise"], batch_size=1, seq_len=16, seed=0)


@pytest.fixture(scope="module")
def reweighted(setup):  # noqa: F811
    # The CPU sizes' learning rate: at the default 1e-3 these ~150 steps leave the proxy so far behind the
    # reference on the noise's byte frequencies that the outcome turns on details of the model and schedule.
    config = setup["tmp"] / "doremi-model.toml"
    config.write_text(Path(setup["model"]).read_text() + "[train]\nlr = 3e-3\n")
    return doremi(setup["data"].path, setup["tmp"] / "doremi.toml", config=str(config), class_name="test-flops",
                  progress=False)


def test_the_unlearnable_domain_gets_less_than_its_natural_share(reweighted):
    assert reweighted["weights"]["noise"] < reweighted["natural"]["noise"]
    assert reweighted["weights"]["clean"] > reweighted["natural"]["clean"]
    excess = reweighted["mean_excess_loss"]
    assert excess["noise"] < excess["clean"]
    assert sum(reweighted["weights"].values()) == pytest.approx(1.0)
    assert "DoReMi" in describe(reweighted)


def test_the_mix_spec_holds_the_averaged_weights_and_the_trajectory(setup, reweighted):  # noqa: F811
    mix = load_mix(reweighted["mix"])
    assert mix.weights == pytest.approx(reweighted["weights"]) and mix.name == "doremi"
    assert mix.data == str(setup["data"].path.resolve())
    sel = mix.selection
    assert sel["method"] == "doremi" and sel["tokenizer_sha256"] == setup["data"].manifest["tokenizer"]["sha256"]
    assert sel["eta"] == 1.0 and sel["smoothing"] == 1e-3 and sel["selection_flops"] > 0
    trajectory = json.loads(open(sel["trajectory"]).read())
    by_step = np.array(trajectory["weights_by_step"])
    assert by_step.shape == (sel["steps"], 2) and np.allclose(by_step.sum(1), 1)
    assert dict(zip(trajectory["domains"], by_step.mean(0))) == pytest.approx(reweighted["weights"])
    assert open(sel["figure"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    for run in (sel["reference_run"], sel["proxy_run"]):
        assert (Path(run) / "checkpoints" / "last.pt").exists()


def test_the_proxy_is_checkpointed_like_a_run(reweighted):
    state = RunDir.open(reweighted["proxy_run"]).load_checkpoint()
    assert {"model", "optimizer", "scaler", "states", "counters", "rng", "identity"} <= set(state)
    assert state["optimizer"]["state"]  # Adam's moments: the proxy stepped through the training optimiser
    assert state["counters"]["step"] == reweighted["settings"]["steps"]
    assert state["identity"]["steps"] == str(reweighted["settings"]["steps"])


def test_a_mix_refuses_data_with_another_tokenizer(setup, reweighted):  # noqa: F811
    mix = load_mix(reweighted["mix"])
    assert mix.check_tokenizer(setup["data"]) is None
    rng = random.Random(1)
    other = prepared(setup["tmp"], "spm", [{"text": clean_text(rng), "domain": "clean"} for _ in range(200)],
                     tokenizer="sentencepiece", vocab_size=300)
    with pytest.raises(UserError, match="do not transfer across tokenizers"):
        mix.check_tokenizer(other)
    assert "warning" in mix.check_tokenizer(other, force=True)


@pytest.mark.parametrize("kwargs,message", [({"eta": 0}, "eta"), ({"smoothing": 2}, "smoothing")])
def test_bad_settings_are_one_sentence(setup, kwargs, message):  # noqa: F811
    with pytest.raises(UserError, match=message):
        doremi(setup["data"].path, setup["tmp"] / "bad.toml", class_name="test-flops", progress=False, **kwargs)
