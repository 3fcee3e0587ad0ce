"""The Ray executor gives the same datasets as local processes (a local Ray instance)."""

import json

import pytest

from helpers import invoke, tiny_corpus

from languini.data.dedup import read_duplicates

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray", reason="Ray is an optional extra")


def test_prepare_and_dedup_on_ray_match_local(tmp_path):
    corpus = tiny_corpus(tmp_path / "c.jsonl", n_docs=300)
    with corpus.open("a") as f:  # duplicates for dedup to find
        f.write(json.dumps({"text": "The cat sat on a mat. " * 20}) + "\n")
        f.write(json.dumps({"text": "the cat sat on a mat " * 20}) + "\n")
    outs = {}
    for kind in ("local", "ray"):
        m = json.loads(invoke("data", "prepare", corpus, "--out", tmp_path / f"data-{kind}", "--vocab-size", 300,
                              "--workers", 2, "--executor", kind, "--no-progress", "--json"))
        d = json.loads(invoke("data", "dedup", tmp_path / f"data-{kind}", "--out", tmp_path / f"dedup-{kind}",
                              "--workers", 2, "--executor", kind, "--no-progress", "--json"))
        outs[kind] = (m["fingerprint"], d["fingerprint"], list(read_duplicates(d["out"])))
    assert outs["ray"] == outs["local"]
    assert outs["local"][2]  # dedup found the planted copy
