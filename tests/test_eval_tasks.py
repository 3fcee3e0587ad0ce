"""The lm-eval tasks written from prepared data: their documents, cloze examples and YAMLs."""

import json
import re

import pytest
import yaml

from languini.data.loader import PreparedData
from languini.errors import UserError
from languini.data.derive import DecodedDocument as Document
from languini.eval_tasks import CLOZE, ROLLING, TASKS_DIR, ClozeSettings, cloze_examples, documents, make_tasks


def words(text):
    return re.findall(r"\S+", text)


def test_rolling_documents_are_the_split_decoded(trained, tmp_path):
    tasks = make_tasks(trained["data"], tmp_path / "tasks")
    assert tasks.names == [ROLLING, CLOZE] and tasks.include_path == (tmp_path / "tasks").resolve()
    rows = [json.loads(line) for line in (tasks.include_path / f"{ROLLING}.jsonl").open()]
    assert len(rows) == tasks.examples[ROLLING] > 0
    # the bytes languini eval divides by are those of these texts
    assert sum(len(r["text"].encode("utf-8")) for r in rows) == trained["result"]["test"]["bytes"]
    data = PreparedData(trained["data"])
    assert [r["id"] for r in rows] == [str(i) for i in data.documents("test").ids]
    assert {r["domain"] for r in rows} <= set(data.domains)


def test_task_yamls_include_the_templates_and_name_their_data_absolutely(trained, tmp_path):
    tasks = make_tasks(trained["data"], tmp_path / "tasks")
    for name in tasks.names:
        cfg = yaml.safe_load((tasks.include_path / f"{name}.yaml").read_text())
        assert cfg["task"] == name
        assert (TASKS_DIR / cfg["include"]).is_file() and cfg["include"].startswith("/")
        data_file = cfg["dataset_kwargs"]["data_files"]["test"]
        assert data_file == str(tasks.include_path / f"{name}.jsonl") and data_file.startswith("/")
        assert cfg["metadata"]["data_fingerprint"] == PreparedData(trained["data"]).fingerprint
    assert not list(tmp_path.glob(".tasks.*"))  # built aside, moved into place


def test_cloze_examples_hold_the_true_continuation_among_others(trained, tmp_path):
    settings = ClozeSettings(context_words=10, continuation_words=4, choices=4, seed=3)
    docs = documents(PreparedData(trained["data"]), "test")
    examples = cloze_examples(docs, settings)
    assert examples and examples == cloze_examples(docs, settings)  # a function of the data and the seed
    assert examples != cloze_examples(docs, ClozeSettings(context_words=10, continuation_words=4, seed=4))
    texts = {d.id: d.text for d in docs}
    for ex in examples:
        choices, truth = ex["choices"], ex["choices"][ex["label"]]
        assert len(choices) == 4 == len(set(choices))
        assert ex["context"] + truth in texts[ex["id"].rsplit("@", 1)[0]]
        assert len(words(ex["context"])) == 10 and all(len(words(c)) == 4 for c in choices)
        lead = truth[: len(truth) - len(truth.lstrip())]
        assert lead and all(c.startswith(lead) and not c[len(lead)].isspace() for c in choices)
    assert {ex["label"] for ex in examples} == {0, 1, 2, 3}


def test_cloze_by_hand_and_too_short_documents(trained, tmp_path):
    docs = [Document("a", "d", "one two  three four\nfive six"), Document("b", "d", "seven eight\tnine")]
    [ex] = cloze_examples(docs, ClozeSettings(context_words=3, continuation_words=2, choices=2))
    i = int(ex["id"].removeprefix("a@"))
    context, truth = [("one two  three", " four\nfive"), ("two  three four", "\nfive six")][i]
    assert ex["context"] == context and ex["choices"][ex["label"]] == truth
    [other] = set(ex["choices"]) - {truth}
    assert other in (truth[0] + "seven eight", truth[0] + "eight\tnine")  # b's words, after the true whitespace
    assert cloze_examples(docs, ClozeSettings(context_words=3, continuation_words=2, choices=4)) == []  # b has two runs
    with pytest.raises(UserError, match="fewer words"):
        make_tasks(trained["data"], tmp_path / "tasks", cloze=ClozeSettings(context_words=10_000))
    assert not (tmp_path / "tasks").exists()
    with pytest.raises(UserError, match="at least two choices"):
        ClozeSettings(choices=1)
