"""Tokenizers: exact round trips, the end-of-document id, loading back from a dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from languini.data import sources
from languini.data.prepare import prepare
from languini.data.shards import token_dtype
from languini.data.tokenizer import ByteTokenizer, load_tokenizer, make_tokenizer
from languini.errors import UserError

TRICKY = [
    "def f(x):\n\treturn x  # tab, spaces\r\n",
    "  leading and trailing spaces  ",
    "\n\n\nblank lines\n\n",
    "caf\u00e9 \u4e2d\u6587 \U0001f642 \u3000 zero\u200bwidth",
    "SentencePiece's own mark \u2581 must survive \u2581\u2581",
    "digits 1234567890 and <eod> spelled out",
    "",
]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    root = sources.stdlib_root()
    return [p.read_text(encoding="utf-8")[:6000] for p in sources.stdlib_files(root)[:12]]


@pytest.fixture(scope="module")
def spm_tokenizer(corpus, tmp_path_factory):
    return make_tokenizer("sentencepiece", tmp_path_factory.mktemp("tok"), vocab_size=400, sample=corpus, threads=2)


def test_bytes_round_trip_and_eod():
    tok = ByteTokenizer()
    assert (tok.vocab_size, tok.eod_id) == (257, 256)
    for text in TRICKY:
        ids = tok.encode(text)
        assert max(ids, default=0) < 256
        assert tok.decode(ids + [tok.eod_id]) == text
    assert tok.encode_batch(TRICKY) == [tok.encode(t) for t in TRICKY]


def test_sentencepiece_round_trip_is_exact(spm_tokenizer, corpus):
    tok = spm_tokenizer
    assert tok.vocab_size == 400 and tok.decode([tok.eod_id]) == ""
    for text in TRICKY + corpus:
        ids = tok.encode(text)
        assert tok.eod_id not in ids
        assert tok.decode(ids + [tok.eod_id]) == text
        assert tok.decode(np.array(ids, dtype=np.uint16)) == text


def test_sentencepiece_batch_equals_single_and_newline_and_indent_are_pieces(spm_tokenizer, corpus):
    tok = spm_tokenizer
    texts = TRICKY + corpus
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]
    pieces = [tok._sp.id_to_piece(i) for i in tok.encode("class A:\n    def f(self):\n        pass\n")]
    assert "\n" in pieces and "\u2581" * 4 in pieces


def test_sentencepiece_training_is_deterministic(corpus, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = make_tokenizer("sentencepiece", tmp_path / "a", vocab_size=420, sample=corpus, threads=1)
    b = make_tokenizer("sentencepiece", tmp_path / "b", vocab_size=420, sample=corpus, threads=2)
    assert a.sha256 == b.sha256


def test_vocabulary_too_large_for_the_sample_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot train a 5000-piece vocabulary"):
        make_tokenizer("sentencepiece", tmp_path, vocab_size=5000, sample=["tiny sample"])


def test_existing_model_is_used_as_is(spm_tokenizer, tmp_path):
    tok = make_tokenizer(str(spm_tokenizer.path), tmp_path, vocab_size=8192)
    assert (tok.sha256, tok.vocab_size, tok.eod_id) == (spm_tokenizer.sha256, 400, spm_tokenizer.eod_id)
    assert tok.settings == {"source": str(spm_tokenizer.path)}


@pytest.mark.parametrize(
    "name, message",
    [("wordpiece", "unknown tokenizer"), ("missing.model", "tokenizer model not found"), ("broken.model", "cannot load the SentencePiece model")],
)
def test_unknown_or_unusable_tokenizer(tmp_path, monkeypatch, name, message):
    monkeypatch.chdir(tmp_path)
    Path("broken.model").write_bytes(b"not a model")
    (tmp_path / "out").mkdir()
    with pytest.raises(UserError, match=message):
        make_tokenizer(name, tmp_path / "out", vocab_size=300)


def test_load_tokenizer_from_dataset_checks_the_hash(spm_tokenizer, tmp_path):
    corpus = tmp_path / "c"
    corpus.mkdir()
    for i in range(30):
        (corpus / f"{i}.txt").write_text(f"document number {i}\n" * 5)
    out = tmp_path / "data"
    prepare([str(corpus)], out, tokenizer=str(spm_tokenizer.path), split=(0.34, 0.33, 0.33), workers=1, progress=False, seed=0)
    tok = load_tokenizer(out)
    assert tok.sha256 == spm_tokenizer.sha256 and tok.encode("one") == spm_tokenizer.encode("one")
    (out / "tokenizer.model").write_bytes(b"tampered")
    with pytest.raises(UserError, match="does not match the sha256"):
        load_tokenizer(out)


def test_token_dtype_fits_the_vocabulary():
    assert token_dtype(257) == np.uint16
    assert token_dtype(65536) == np.uint16  # ids 0..65535
    assert token_dtype(65537) == np.uint32
    assert token_dtype(100_000) == np.uint32
