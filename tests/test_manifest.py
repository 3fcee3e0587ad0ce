"""The data contracts: the manifest's typed view, the one document decoder, and derived datasets."""

import json
import pickle

import numpy as np
import pytest

from languini.data import minhash
from languini.data.derive import (check_derived_out, compute_identity, document_table, documents, open_parent, texts,
                                  write_derived)
from languini.data.loader import PreparedData
from languini.data.manifest import (BUNDLED, FORMAT, MANIFEST_FILE, PROVENANCE, SPLITS, STAMPS, Manifest, fingerprint,
                                    read_manifest)
from languini.data.prepare import prepare
from languini.errors import UserError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A small byte-tokenised dataset in two domains, with text outside ASCII."""
    tmp = tmp_path_factory.mktemp("manifest")
    corpus = tmp / "c.jsonl"
    rows = [{"id": f"d{i}", "text": f"naïve café {i} " * (3 + i % 5), "set": "a" if i % 3 else "b"} for i in range(120)]
    corpus.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    prepare([str(corpus)], tmp / "data", tokenizer="bytes", domain_field="set", split=(0.6, 0.2, 0.2), progress=False)
    return PreparedData(tmp / "data")


def test_the_typed_view_reads_what_the_json_holds(data):
    raw = json.loads((data.path / MANIFEST_FILE).read_text())
    m = data.manifest
    assert isinstance(m, Manifest) and m.format == FORMAT == raw["format"]
    assert m.fingerprint == raw["fingerprint"] == fingerprint({k: v for k, v in raw.items() if k not in STAMPS})
    assert m.vocab_size == raw["tokenizer"]["vocab_size"] and m.eod_id == raw["tokenizer"]["eod_id"]
    assert m.domains == ["a", "b"] and m.dtype == raw["dtype"] and m.shard_tokens == raw["settings"]["shard_tokens"]
    assert m.split_names == list(SPLITS) and m.split("test") == raw["splits"]["test"]
    assert m.domain_tokens("train") == {d: v["tokens"] for d, v in raw["splits"]["train"]["by_domain"].items()}
    assert m.shard_hashes("test") == tuple(s["sha256"] for s in raw["splits"]["test"]["shards"])
    assert m.evaluation_identity == raw["evaluation_identity"] and m.parent is None and m.parent_fingerprint is None
    assert dict(m) == raw and m.to_dict() == raw  # the JSON on disk is what it was
    with pytest.raises(TypeError):
        m["fingerprint"] = "x"  # read-only
    copy = m.to_dict()
    copy["splits"]["test"]["tokens"] = -1
    assert m.split("test")["tokens"] > 0  # writers get a copy
    with pytest.raises(UserError, match="Split 'dev' is not in"):
        m.split("dev")


def test_a_manifest_that_is_not_an_object_is_refused_in_one_sentence(tmp_path):
    (tmp_path / MANIFEST_FILE).write_text("[1, 2]")
    with pytest.raises(UserError, match="is not a data manifest"):
        read_manifest(tmp_path)
    (tmp_path / BUNDLED).write_text(json.dumps({"tokenizer": {"kind": "bytes"}}))
    assert read_manifest(tmp_path, BUNDLED).tokenizer_sha256 is None
    (tmp_path / MANIFEST_FILE).write_text(json.dumps({"format": "languini-data/0"}))
    with pytest.raises(UserError, match="format 'languini-data/0'"):
        open_parent(tmp_path)


def test_one_decoder_gives_every_document_its_text_id_and_domain(data):
    docs, stream, tok = data.documents("train"), data.stream("train"), data.tokenizer
    by_hand = [tok.decode(stream.read(int(a), int(b - a))) for a, b in zip(docs.offsets[:-1], docs.offsets[1:])]
    decoded = list(documents(data, "train"))
    assert [d.text for d in decoded] == by_hand == list(texts(data, "train"))
    assert [d.id for d in decoded] == list(docs.ids)
    assert [d.domain for d in decoded] == [data.domains[i] for i in docs.domains]
    table = document_table(data, "test")
    info = data.manifest.split("test")
    assert int(table.n_bytes.sum()) == info["bytes"] and int(table.n_chars.sum()) == info["chars"]
    assert int(table.n_bytes.sum()) > int(table.n_chars.sum())  # the ï and é are two bytes each
    assert compute_identity(data) == data.manifest.evaluation_identity


def test_a_derived_dataset_keeps_the_evaluation_splits_and_names_its_parent(data, tmp_path):
    table = document_table(data, "train")
    keep = np.arange(len(table)) % 2 == 0
    out = tmp_path / "half"
    manifest = write_derived(data, table, keep, out, "selection", {"method": "test"}, {"r.json": {"kept": "half"}},
                             progress=False)
    child = PreparedData(out)
    assert child.manifest.fingerprint == manifest.fingerprint != data.fingerprint
    assert child.manifest.parent == {"fingerprint": data.fingerprint, "path": str(data.path.resolve())}
    assert child.manifest["selection"] == {"method": "test"} and "dedup" not in child.manifest
    assert child.manifest.evaluation_identity == data.manifest.evaluation_identity
    assert child.manifest.split("train")["documents"] == int(keep.sum())
    for split in SPLITS[1:]:
        assert child.manifest.split(split) == data.manifest.split(split)
    assert [d.text for d in documents(child, "train")] == [t for t, k in zip(texts(data, "train"), keep) if k]
    assert json.loads((out / "r.json").read_text()) == {"kept": "half", "fingerprint": manifest.fingerprint}
    # a grandchild drops its parent's provenance and names only its own
    grand = write_derived(child, document_table(child), np.ones(int(keep.sum()), bool), tmp_path / "g", "dedup",
                          {"scope": "x"}, progress=False)
    assert grand.parent_fingerprint == child.fingerprint and "selection" not in grand
    assert set(PROVENANCE) & set(grand) == {"parent", "dedup"}
    with pytest.raises(UserError, match="would replace the input"):
        check_derived_out(out, out, force=True)
    with pytest.raises(UserError, match="already holds a dataset"):
        check_derived_out(data.path, out, force=False)


def test_a_minhasher_travels_to_a_worker_with_its_separator_table(monkeypatch):
    hasher = minhash.MinHasher(64, 3, seed=5)
    texts_ = ["The cat, the hat; the bat!", "naïve café — déjà vu", ""]
    expected = hasher.sign(texts_)
    payload = pickle.dumps(hasher)
    assert len(payload) < 200_000  # the table packed to bits, no power tables
    monkeypatch.setattr(minhash, "folded", lambda: pytest.fail("a worker must not rebuild the table"))
    copy = pickle.loads(payload)
    assert all(np.array_equal(a, b) for a, b in zip(copy.sign(texts_), expected))
