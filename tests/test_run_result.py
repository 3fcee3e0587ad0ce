"""The run contract: result.json read and written through `RunResult` (schema checked, keys
kept), and `load_run_model` as the one way to rebuild a run's model, refusing changed data."""

import json
import re

import pytest
import torch
from helpers import edit_json, fails

from languini.errors import UserError
from languini.leaderboard import check
from languini.run import RESULT_SCHEMA, RunResult, load_run_model, model_warnings
from languini.selection.models import load_selection_model


def test_a_trained_run_reads_back_key_for_key(trained):
    raw = json.loads((trained["run"] / "result.json").read_text())
    result = RunResult.read(trained["run"] / "result.json")
    assert list(result.to_dict()) == list(raw) and result.to_dict() == raw
    assert raw == trained["result"]  # what `train` returned is what it wrote
    assert result.schema == RESULT_SCHEMA and result.extra == {}
    assert result.test["bits_per_byte"] == raw["test"]["bits_per_byte"] and result.steps == raw["steps"]


def test_an_old_result_with_unknown_keys_round_trips(trained, tmp_path):
    raw = json.loads((trained["run"] / "result.json").read_text())
    for later in ("budget_mode", "budget_charge", "mix_details", "warnings", "evaluation_identity", "dataset"):
        raw.pop(later)
    raw["written_by"] = "a newer languini of the same schema"
    result = RunResult.from_dict(raw, "old/result.json")
    assert result.budget_mode is None and result.warnings == [] and result.evaluation_identity is None
    assert result.extra == {"written_by": "a newer languini of the same schema"}
    result.write(tmp_path / "result.json")
    again = RunResult.read(tmp_path / "result.json")
    assert again == result and "evaluation_identity" not in again.to_dict()
    assert again.to_dict()["written_by"] == raw["written_by"]


@pytest.mark.parametrize("change, words", [
    (lambda r: r.pop("schema"), "names no schema"),
    (lambda r: r.update(schema=RESULT_SCHEMA + 1), "newer than the 1 this languini reads"),
    (lambda r: r.update(schema="one"), "unknown schema 'one'"),
    (lambda r: (r.pop("test"), r.pop("steps")), "lacks steps, test: it is not a finished run's result"),
    (lambda r: r.update(test=[1.0]), "holds no test table"),
])
def test_a_result_languini_cannot_read_is_one_sentence_naming_the_file(run_copy, change, words):
    edit_json(run_copy / "result.json", change)
    with pytest.raises(UserError, match=re.escape(words)) as caught:
        RunResult.read(run_copy / "result.json")
    assert str(run_copy / "result.json") in str(caught.value)
    assert words in fails("fit", run_copy, "--law", "power", "--out", run_copy / "fit.json").replace("\n", " ")
    assert [p for p in check(run_copy).problems if p.startswith("readable: result.json")]


def test_a_run_whose_data_changed_is_refused_by_every_loader(trained, run_copy):
    config = run_copy / "config.toml"
    config.write_text(re.sub(r'data_fingerprint = "[^"]*"', 'data_fingerprint = "changed"', config.read_text()))
    with pytest.raises(UserError, match="not the data this run trained on"):
        load_run_model(run_copy, "cpu")
    data = load_run_model(trained["run"], "cpu").data
    with pytest.raises(UserError, match="not the data this run trained on"):
        load_selection_model(run_copy, data, torch.device("cpu"))


def test_a_selection_model_is_the_run_model_with_its_result(trained):
    loaded = load_run_model(trained["run"], "cpu")
    model = load_selection_model(trained["run"], loaded.data, torch.device("cpu"))
    assert model.result == RunResult.read(trained["run"] / "result.json")
    assert model.seq_len == loaded.seq_len and model.vocab_size == loaded.config.vocab_size
    assert all(torch.equal(a, b) for a, b in zip(model.model.state_dict().values(),
                                                 loaded.model.state_dict().values()))
    assert model.provenance()["data_fingerprint"] == loaded.data.fingerprint


def test_model_warnings_name_the_role_run_and_steps():
    assert model_warnings("proxy", "runs/p", 10, ["too short"]) == [
        "the proxy (runs/p): too short",
        "the proxy (runs/p) trained only 10 steps, fewer than 300: what it selects says little"]
    assert model_warnings("reference", "runs/r", 300) == []
