"""Deduplication: planted exact, near and cross-domain copies and a contaminated test document,
found (or kept) as they should be; the output is a complete dataset; bad input is refused."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
from scipy.integrate import quad
from test_data_prepare import load_documents, no_leftovers

from languini.data import loader
from languini.data.dedup import dedup, describe, read_duplicates
from languini.data.loader import PreparedData
from languini.data.minhash import MinHasher, candidate_probability, lsh_params, normalise, s_curve
from languini.data.prepare import prepare, split_of
from languini.errors import UserError

FRACTIONS = (0.8, 0.1, 0.1)
VOCAB = [f"w{i}" for i in range(5000)]
FAST = dict(workers=1, progress=False)


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = normalise(text).split()
    return {tuple(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}


def jaccard(a: str, b: str) -> float:
    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y)


class Planter:
    """Documents made to land in a chosen split (membership is a hash of the text)."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)

    def fresh(self, split: str = "train", n: int = 200) -> str:
        return self._until(split, lambda: " ".join(self.rng.choice(VOCAB) for _ in range(n)))

    def edited(self, text: str, changes: int, split: str = "train") -> str:
        """`text` with `changes` words, evenly spread, replaced by words found nowhere else."""
        def edit() -> str:
            words = text.split()
            for k in range(changes):
                words[(2 * k + 1) * len(words) // (2 * changes)] = f"new{self.rng.randrange(10**9)}"
            return " ".join(words)

        return self._until(split, edit)

    def restyled(self, text: str, split: str = "train") -> str:
        """The same words in another case, punctuation and spacing: an exact duplicate."""
        def restyle() -> str:
            words = text.split()
            marks = ["", ",", ";", "!!", " -", "."]
            return "  ".join(w.upper() + self.rng.choice(marks) + ("\n" if self.rng.random() < 0.1 else "") for w in words)

        return self._until(split, restyle)

    @staticmethod
    def _until(split: str, make) -> str:
        while split_of((text := make()).encode(), FRACTIONS) != split:
            pass
        return text


def build_corpus(path: Path) -> dict[str, str]:
    """{id: text} in stream order; ids say what each document is planted as."""
    p = Planter()
    a, b, d, e, f = (p.fresh() for _ in range(5))
    test_doc = p.fresh("test")
    docs = {
        "web-a": a,
        "web-a-restyled": p.restyled(a),
        "web-b": b,
        "web-b-near": p.edited(b, 1),
        "web-d": d,
        "web-e": e,
        "web-f": f,
        "web-f-half": p.edited(f, 14),
        "books-d-near": p.edited(d, 1),
        "books-e-copy": p.restyled(e),
        "books-test-near": p.edited(test_doc, 1),
        "books-other": p.fresh(),
        "valid-0": p.fresh("validation"),
        "test-0": test_doc,
    }
    with open(path, "w", encoding="utf-8") as out:
        for doc_id, text in docs.items():
            out.write(json.dumps({"id": doc_id, "text": text, "meta": {"set": doc_id.split("-")[0]}}) + "\n")
    return docs


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("dedup")
    docs = build_corpus(tmp / "corpus.jsonl")
    assert jaccard(docs["web-b"], docs["web-b-near"]) > 0.9 and jaccard(docs["web-d"], docs["books-d-near"]) > 0.9
    assert jaccard(docs["web-f"], docs["web-f-half"]) < 0.55 and normalise(docs["web-a"]) == normalise(docs["web-a-restyled"])
    prepare([str(tmp / "corpus.jsonl")], tmp / "data", tokenizer="bytes", domain_field="meta.set", split=FRACTIONS, **FAST)
    return tmp / "data"


def removed(report: dict) -> dict[str, tuple[str, str]]:
    return {d["removed"]: (d["kept"], d["kind"]) for d in read_duplicates(report["out"])}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_local_scope_removes_copies_within_a_domain_only(parent, tmp_path):
    report = dedup(parent, tmp_path / "out", scope="local", **FAST)
    assert removed(report) == {"web-a-restyled": ("web-a", "exact"), "web-b-near": ("web-b", "near")}
    assert report["total"]["cross_domain"] is None and report["by_domain"]["books"]["documents_removed"] == 0
    web = report["by_domain"]["web"]
    assert (web["documents_before"], web["documents_removed"], web["documents_after"], web["exact"], web["near"]) == (8, 2, 6, 1, 1)


def test_global_scope_also_finds_cross_domain_copies(parent, tmp_path):
    report = dedup(parent, tmp_path / "out", scope="global", **FAST)
    assert removed(report) == {
        "web-a-restyled": ("web-a", "exact"),
        "web-b-near": ("web-b", "near"),
        "books-d-near": ("web-d", "near"),
        "books-e-copy": ("web-e", "exact"),
    }
    assert report["total"]["cross_domain"] == report["by_domain"]["books"]["cross_domain"] == 2
    assert report["by_domain"]["web"]["cross_domain"] == 0
    assert "web-f-half" not in removed(report)  # Jaccard ~0.5: kept


def test_decontamination_removes_train_copies_of_test_documents(parent, tmp_path):
    plain = dedup(parent, tmp_path / "plain", **FAST)
    assert "books-test-near" not in removed(plain) and plain["total"]["contamination"] == 0
    report = dedup(parent, tmp_path / "out", decontaminate=True, **FAST)
    assert {d["removed"]: d for d in read_duplicates(report["out"])}["books-test-near"] == {
        "removed": "books-test-near", "kept": "test-0", "kept_split": "test", "kind": "contamination", "domain": "books",
    }  # fmt: skip
    assert report["total"]["contamination"] == 1 and report["total"]["documents_removed"] == 5
    assert "books-test-near" not in PreparedData(tmp_path / "out").documents("train").ids


def test_ids_are_streamed_and_picked_without_an_index(parent, tmp_path, monkeypatch):
    """A terabyte split's id index would take GBs: dedup reads the ids in order as it writes and
    picks the few its report names in one pass."""
    expected = dedup(parent, tmp_path / "indexed", decontaminate=True, **FAST)
    monkeypatch.setattr(loader.DocIds, "_starts", property(lambda self: pytest.fail("dedup built an id index")))
    report = dedup(parent, tmp_path / "out", decontaminate=True, **FAST)
    listed = list(read_duplicates(report["out"]))
    assert listed == list(read_duplicates(expected["out"])) and len(listed) == 5
    kept = [i for i in PreparedData(parent).documents("train").ids if i not in removed(report)]
    assert list(PreparedData(tmp_path / "out").documents("train").ids) == kept


def test_output_is_a_complete_dataset_with_the_parents_evaluation_splits(parent, tmp_path):
    out = tmp_path / "out"
    report = dedup(parent, out, decontaminate=True, **FAST)
    found = load_documents(out)  # shard and index sha256s, counts and by_domain against the files
    before = load_documents(parent)
    assert found["train"] == {k: v for k, v in before["train"].items() if k not in removed(report)}
    for name in ("validation", "test"):
        for f in (parent / name).iterdir():
            assert sha256(out / name / f.name) == sha256(f)
    manifest, original = json.loads((out / "manifest.json").read_text()), json.loads((parent / "manifest.json").read_text())
    assert list(manifest) == list(original) + ["parent", "dedup"]
    assert manifest["parent"] == {"path": str(parent.resolve()), "fingerprint": original["fingerprint"]}
    assert manifest["dedup"] == {**report["settings"], "scope": "global", "bands": 9, "rows": 13}
    assert manifest["fingerprint"] == report["fingerprint"] != original["fingerprint"]
    assert {k: manifest["splits"][k] for k in ("validation", "test")} == {k: original["splits"][k] for k in ("validation", "test")}
    assert manifest["splits"]["train"]["tokens"] == report["total"]["tokens_after"] == original["splits"]["train"]["tokens"] - report["total"]["tokens_removed"]
    assert json.loads((out / "dedup.json").read_text()) == report and report["duplicates_file"] == "duplicates.jsonl"
    assert len(list(read_duplicates(out))) == report["total"]["documents_removed"] == 5  # one line per removed document
    data = PreparedData(out)
    assert len(data.stream("train")) == report["total"]["tokens_after"] and data.documents("train").ids == list(found["train"])
    assert no_leftovers(tmp_path)


def test_result_does_not_depend_on_workers_and_force_replaces(parent, tmp_path):
    one = dedup(parent, tmp_path / "out", workers=1, progress=False)
    with pytest.raises(UserError, match="already holds a dataset; pass --force"):
        dedup(parent, tmp_path / "out", **FAST)
    two = dedup(parent, tmp_path / "out", workers=2, progress=False, force=True)
    assert one["fingerprint"] == two["fingerprint"] and removed(one) == removed(two)
    assert "dedup local" in describe(dedup(parent, tmp_path / "local", scope="local", **FAST))


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(threshold=0.0), "strictly between 0 and 1"),
        (dict(threshold=1.0), "strictly between 0 and 1"),
        (dict(ngram=0), "ngram must be at least 1"),
        (dict(num_perm=8), "num_perm must be at least 16"),
        (dict(scope="domain"), "unknown dedup scope 'domain'"),
        (dict(workers=0), "workers must be at least 1"),
    ],
)
def test_bad_settings_are_refused(parent, tmp_path, options, message):
    with pytest.raises(UserError, match=message):
        dedup(parent, tmp_path / "out", **{**FAST, **options})
    assert not (tmp_path / "out").exists()


def test_bad_folders_are_refused(parent, tmp_path):
    with pytest.raises(UserError, match="prepared data folder not found"):
        dedup(tmp_path / "missing", tmp_path / "out", **FAST)
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match="is not a prepared dataset"):
        dedup(tmp_path / "plain", tmp_path / "out", **FAST)
    for out in (parent, parent.parent):
        with pytest.raises(UserError, match="would replace the input"):
            dedup(parent, out, force=True, **FAST)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds other files and no languini dataset"):
        dedup(parent, tmp_path / "mine", force=True, **FAST)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"


def test_lsh_params_match_the_error_integrals():
    assert lsh_params(0.8, 128) == (9, 13) and lsh_params(0.5, 128) == (25, 5)  # datasketch's _optimal_param
    for threshold in (0.3, 0.6, 0.85):
        b, r = lsh_params(threshold, 64)
        error = lambda b, r: 0.5 * quad(lambda s: candidate_probability(s, b, r), 0, threshold)[0] + 0.5 * quad(lambda s: 1 - candidate_probability(s, b, r), threshold, 1)[0]
        assert b * r <= 64 and all(error(b, r) <= error(b2, r2) + 1e-12 for b2 in range(1, 65) for r2 in range(1, 64 // b2 + 1))


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9])
def test_s_curve_rises_through_the_threshold(threshold):
    bands, rows = lsh_params(threshold, 128)
    curve = s_curve(bands, rows)
    probabilities = [p["probability"] for p in curve]
    assert [p["jaccard"] for p in curve] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert probabilities == sorted(probabilities) and probabilities[-1] == 1.0
    assert 0.25 < candidate_probability(threshold, bands, rows) < 0.75


def test_normalisation_and_words_agree_with_the_reference():
    texts = ["Hello,  World!\tIt's\u00a0café — ça va?", "HELLO world it s cafe\u0301 c\u0327a va", "", "...", "one", "日本語。テスト_x"]
    assert [normalise(t) for t in texts] == ["hello world it s café ça va", "hello world it s café ça va", "", "", "one", "日本語 テスト x"]
    hasher = MinHasher(32, 3)
    words, starts = hasher.words(texts)
    assert np.diff(starts).tolist() == [len(normalise(t).split()) for t in texts]
    joined, _ = hasher.words([" ".join(normalise(t).split()) for t in texts])
    assert (words == joined).all()
    exact, signatures = hasher.sign(texts)
    assert exact[0] == exact[1] and exact[2] == exact[3] and len(set(exact[[0, 2, 4, 5]])) == 4
    assert (signatures[0] == signatures[1]).all() and signatures.shape == (6, 32) and signatures.dtype == np.uint32


def test_signatures_estimate_jaccard_similarity():
    rng = random.Random(1)
    hasher = MinHasher(256, 5, seed=3)
    errors = []
    for changes in range(0, 40, 2):
        a = " ".join(rng.choice(VOCAB) for _ in range(300))
        words = a.split()
        for k in range(changes):
            words[rng.randrange(len(words))] = f"new{k}"
        b = " ".join(words)
        _, sig = hasher.sign([a, b, a + " " + b])  # batch neighbours do not leak into each other
        errors.append((sig[0] == sig[1]).mean() - jaccard(a, b))
        assert (hasher.sign([a])[1] == sig[0]).all()
    assert abs(np.mean(errors)) < 0.02 and np.max(np.abs(errors)) < 4 * np.sqrt(0.25 / 256)


def test_sentencepiece_dataset_keeps_its_tokenizer(parent, tmp_path):
    corpus = parent.parent / "corpus.jsonl"
    prepare([str(corpus)], tmp_path / "sp", vocab_size=280, domain_field="meta.set", split=FRACTIONS, **FAST)
    report = dedup(tmp_path / "sp", tmp_path / "out", **FAST)
    assert set(removed(report)) == {"web-a-restyled", "web-b-near", "books-d-near", "books-e-copy"}
    assert sha256(tmp_path / "out" / "tokenizer.model") == sha256(tmp_path / "sp" / "tokenizer.model")
    assert load_documents(tmp_path / "out")["train"] == {k: v for k, v in load_documents(tmp_path / "sp")["train"].items() if k not in removed(report)}
