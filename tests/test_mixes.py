import json
import random
import tomllib

import numpy as np
import pytest

from helpers import fails, invoke
from languini.data.loader import PreparedData
from languini.data.streams import MixedStreams
from languini.data.prepare import prepare
from languini.errors import UserError
from languini.io import toml_table
from languini.mix import SelectionCost, load_mix, parse_mix, selection_text, write_mix


@pytest.fixture(scope="module")
def two_domains(tmp_path_factory):
    """'big' has 3x the text of 'small'; documents of 50-150 bytes."""
    tmp = tmp_path_factory.mktemp("mix")
    rng = random.Random(0)
    lines = []
    for i in range(800):
        domain = "small" if i % 4 == 0 else "big"
        text = "".join(rng.choice("abcdefgh ") for _ in range(rng.randint(50, 150)))
        lines.append(json.dumps({"text": f"{domain}: {text}", "domain": domain}))
    (tmp / "c.jsonl").write_text("\n".join(lines) + "\n")
    prepare([str(tmp / "c.jsonl")], tmp / "data", tokenizer="bytes", domain_field="domain",
            split=(0.9, 0.05, 0.05), progress=False)
    return PreparedData(tmp / "data")


def spec(tmp_path, body):
    path = tmp_path / "mix.toml"
    path.write_text(body)
    return path


@pytest.mark.parametrize("body,message", [
    ('[weights]\nbig = -1\nsmall = 1\n', "non-negative"),
    ('[weights]\nbig = 0\nsmall = 0\n', "weight zero"),
    ('[weights]\nhuge = 1\n', "unknown domain"),
    ('max_epochs = 2\n', "needs 'weights'"),
    ('flavour = 1\n[weights]\nbig = 1\n', "unknown key"),
    ('[weights\n', "not valid TOML"),
    ('dedup = "yes"\n[weights]\nbig = 1\n', "'dedup' must be a table"),
    ('[weights]\nbig = 1\n[dedup]\nshingles = 3\n', "unknown dedup setting 'shingles'"),
    ('[weights]\nbig = 1\n[dedup]\nscope = 1\n', "'scope' must be a str"),
    ('[weights]\nbig = 1\n[dedup]\ndecontaminate = 1\n', "'decontaminate' must be a bool"),
])
def test_bad_specs_are_one_sentence(tmp_path, two_domains, body, message):
    with pytest.raises(UserError, match=message):
        load_mix(spec(tmp_path, body)).resolve({"big": 10, "small": 10})


def test_weights_are_normalised_and_natural_follows_size():
    mix = parse_mix({"weights": {"big": 3, "small": 1}}, "x", "m").resolve({"big": 10, "small": 50})
    assert mix.weights == {"big": 0.75, "small": 0.25}
    natural = parse_mix({"weights": "natural"}, "x", "n").resolve({"big": 10, "small": 30})
    assert natural.weights == {"big": 0.25, "small": 0.75}
    assert parse_mix({"weights": {"big": 1}}, "x", "m").resolve({"big": 1, "small": 1}).weights["small"] == 0


@pytest.mark.parametrize("weights", [{"big": 0.5, "small": 0.5}, {"big": 0.1, "small": 0.9}])
def test_realised_share_is_within_one_percent_of_the_weight(two_domains, weights):
    s = MixedStreams(two_domains, "train", weights, batch_size=8, seq_len=64, seed=3)
    for step in range(600):
        s.batch(step)
    for domain, share in s.realised_shares().items():
        assert abs(share - weights[domain]) < 0.01, (domain, share)
    assert s.repeats()["small"] > 1  # the small domain had to repeat


def test_the_sampler_resumes_exactly(two_domains):
    a = MixedStreams(two_domains, "train", {"big": 0.3, "small": 0.7}, 4, 32, seed=1)
    for step in range(25):
        a.batch(step)
    b = MixedStreams(two_domains, "train", {"big": 0.3, "small": 0.7}, 4, 32, seed=1)
    b.load_state_dict(a.state_dict())
    for step in range(25, 40):
        xa, ya = a.batch(step)
        xb, yb = b.batch(step)
        assert xa.equal(xb) and ya.equal(yb)
    assert np.array_equal(a.tokens_read, b.tokens_read)


def test_rows_are_continuous_streams(two_domains):
    s = MixedStreams(two_domains, "train", {"big": 0.5, "small": 0.5}, 2, 16, seed=0)
    x0, y0 = s.batch(0)
    x1, _ = s.batch(1)
    assert (y0[:, :-1] == x0[:, 1:]).all() and (x1[:, 0] == y0[:, -1]).all()


def test_an_unsatisfiable_mix_refuses_to_start(tmp_path, two_domains):
    path = spec(tmp_path, "max_epochs = 1\n[weights]\nsmall = 1\n")
    out = fails("train", "--family", "gpt", "--config", "nano", "--data", two_domains.path, "--class", "flops-1e13",
                "--mix", path, "--out", tmp_path / "run", "--batch-size", 4)  # a FLOP budget: the same on a busy machine
    assert "domain 'small'" in out and "tokens short" in out
    assert not (tmp_path / "run").exists()


def test_a_run_records_its_mix(tmp_path, two_domains, test_classes):
    path = spec(tmp_path, 'name = "even"\nmax_epochs = 100\n[weights]\nbig = 1\nsmall = 1\n')
    r = json.loads(invoke("train", "--family", "gpt", "--config", "nano", "--data", two_domains.path,
                          "--class", "test-1e9", "--mix", path, "--out", tmp_path / "run", "--batch-size", 4,
                          "--no-progress", "--json"))
    assert r["mix"] == "even" and r["mix_details"]["weights"] == {"big": 0.5, "small": 0.5}
    assert set(r["mix_details"]["realised_shares"]) == {"big", "small"}
    assert set(r["test"]["by_domain"]) == {"big", "small"}
    assert json.loads((tmp_path / "run" / "mix.json").read_text())["name"] == "even"


def test_compare_trains_each_mix_once_at_one_budget(tmp_path, two_domains, test_classes):
    for name, w in (("even", "big = 1\nsmall = 1"), ("big-only", "big = 1")):
        (tmp_path / f"{name}.toml").write_text(f'name = "{name}"\nmax_epochs = 100\n[weights]\n{w}\n')
    args = ["mix", "compare", tmp_path / "even.toml", tmp_path / "big-only.toml", "--family", "gpt", "--config",
            "nano", "--class", "test-flops", "--data", two_domains.path, "--out", tmp_path / "cmp", "--no-progress"]
    table = json.loads(invoke(*args, "--json"))
    rows = {r["mix"]: r for r in table["rows"]}
    assert set(rows) == {"even", "big-only"}
    assert rows["even"]["tokens"] == rows["big-only"]["tokens"]
    assert set(rows["even"]["by_domain"]) == {"big", "small"}
    mtime = (tmp_path / "cmp" / "even-seed0" / "result.json").stat().st_mtime
    assert "| even |" in invoke(*args)  # the second call reuses the finished runs
    assert (tmp_path / "cmp" / "even-seed0" / "result.json").stat().st_mtime == mtime


def test_a_mix_can_deduplicate_its_data_first(tmp_path, test_classes):
    rng = random.Random(1)
    texts = [" ".join(rng.choice("abcdefgh") * rng.randint(1, 4) for _ in range(30)) for _ in range(300)]
    docs = [{"text": t, "domain": "big" if i % 3 else "small"} for i, t in enumerate(texts)]
    docs += [dict(d) for d in docs[:60]]  # 60 exact copies, each in its original's split and domain
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    prepare([str(tmp_path / "c.jsonl")], tmp_path / "data", tokenizer="bytes", domain_field="domain",
            split=(0.9, 0.05, 0.05), progress=False)
    parent = PreparedData(tmp_path / "data")
    path = spec(tmp_path, 'name = "deduped"\nmax_epochs = 100\nweights = "natural"\n[dedup]\nscope = "local"\n')
    args = ["train", "--family", "gpt", "--config", "nano", "--data", parent.path, "--class", "test-1e9", "--mix", path,
            "--batch-size", 4, "--no-progress", "--json"]
    r = json.loads(invoke(*args, "--out", tmp_path / "run"))
    child = PreparedData(r["data"]["path"])
    assert child.path.parent == parent.path.parent and child.path.name.startswith("data.dedup-")
    assert child.manifest["parent"]["fingerprint"] == parent.fingerprint
    copies_in_train = parent.manifest["splits"]["train"]["documents"] - child.manifest["splits"]["train"]["documents"]
    assert copies_in_train > 40 and child.manifest["dedup"]["scope"] == "local"
    assert r["mix_details"]["dedup"] == {"scope": "local"}
    assert r["mix_details"]["weights"]["big"] == pytest.approx(  # natural weights of the deduplicated data
        child.manifest["splits"]["train"]["by_domain"]["big"]["tokens"] / child.manifest["splits"]["train"]["tokens"])
    made = (child.path / "manifest.json").stat().st_mtime
    json.loads(invoke(*args, "--out", tmp_path / "again"))
    assert (child.path / "manifest.json").stat().st_mtime == made  # made once, then reused
    bad = spec(tmp_path, 'weights = "natural"\n[dedup]\nthreshold = 2.0\n')
    assert "strictly between 0 and 1" in fails(*args[:10], bad, "--out", tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    invoke("data", "dedup", parent.path, "--no-progress")  # --out defaults to a sibling named for the scope
    assert PreparedData(tmp_path / "data-dedup-global").manifest["parent"]["fingerprint"] == parent.fingerprint


def test_a_spec_survives_parse_write_load(tmp_path):
    """Everything `load_mix` reads, `write_mix` writes: weights, dedup and selection included."""
    (tmp_path / "data").mkdir()
    path = spec(tmp_path, 'name = "m"\ndata = "data"\nmax_epochs = 2.5\n[weights]\nbig = 3\n"odd name" = 1\n'
                          '[dedup]\nscope = "global"\nthreshold = 0.7\nngram = 4\ndecontaminate = false\n'
                          '[selection]\nmethod = "perplexity"\nselection_flops = 4e11\ncharge = true\n'
                          '[selection.settings]\nkeep = 0.5\n')
    mix = load_mix(path)
    assert mix.dedup == {"scope": "global", "threshold": 0.7, "ngram": 4, "decontaminate": False}
    (tmp_path / "moved").mkdir()
    write_mix(tmp_path / "moved" / "again.toml", mix)
    again = load_mix(tmp_path / "moved" / "again.toml")
    assert again == mix and again.digest() == mix.digest()
    assert 'data = "../data"' in (tmp_path / "moved" / "again.toml").read_text()  # relative to the spec


def test_the_toml_writer_reads_back_what_it_wrote():
    table = {"s": 'q"uote \\ tab\t new\nline del\x7f é', "i": -3, "f": 0.1, "inf": float("inf"), "b": True,
             "list": [1, "two", 3.5], "gone": None, "odd key": 1, "t": {"a.b": {"deep": "x"}, "n": 2}}
    back = tomllib.loads(toml_table(table))
    assert back == {k: v for k, v in table.items() if v is not None}


def test_one_selection_cost_shape_and_one_way_to_say_it():
    table = {"method": "d4", "tokenizer_sha256": "abc", "selection_hours": 0.0308, "selection_reference": "local",
             "selection_flops": 2e12, "charge": True}
    cost = SelectionCost.from_dict(table)
    assert cost.to_dict() == {k: v for k, v in table.items() if k != "tokenizer_sha256"}
    assert SelectionCost.from_dict(cost.to_dict()) == cost
    assert cost.text() == "d4: 0.0308 h (charged)"
    flops = SelectionCost.from_dict({**table, "selection_hours": None, "charge": False})
    assert flops.text() == "d4: 2e+12 FLOPs"
    unknown = SelectionCost(rule="an external embedder")
    assert unknown.text() == "cost unknown (an external embedder)"
    assert SelectionCost.from_dict(unknown.report()) == unknown
    assert SelectionCost.from_dict({"method": "d4", "charged": True}).charge  # compare.json rows written before the rename
    assert selection_text(None) == "–" and selection_text(cost.to_dict(), "none") == cost.text()
