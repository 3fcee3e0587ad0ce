"""`prepare` end to end: layout, manifest, splits, round trips, and refusing bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from languini.data import sources
from languini.data.manifest import SPLITS
from languini.data.prepare import TrainingSample, prepare, split_of
from languini.data.shards import DocInfo, EncodedBatch, NpyAppender, SplitWriter
from languini.data.tokenizer import load_tokenizer
from languini.errors import UserError

FAST = dict(workers=1, progress=False)
MANIFEST_KEYS = {
    "format", "languini_version", "created", "fingerprint", "evaluation_identity", "sources", "split_fractions",
    "settings", "domains", "tokenizer", "dtype", "splits", "bad_lines_skipped", "invalid_utf8_replaced",
    "empty_documents_skipped",
}  # fmt: skip


def texts(n: int, start: int = 0) -> list[str]:
    return [f"Document {i}: caf\u00e9 \u4e2d {'word ' * (i % 7)}\n  indented line {i * i}\n" for i in range(start, start + n)]


def write_corpus(path: Path, docs: list[str]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i, text in enumerate(docs):
            f.write(json.dumps({"text": text, "id": f"doc-{hashlib.md5(text.encode()).hexdigest()[:8]}", "meta": {"set": ["web", "books"][i % 2]}}) + "\n")
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_documents(out: Path) -> dict[str, dict[str, tuple[str, str]]]:
    """Every document of every split, {split: {id: (text, domain)}}, checking the layout on the way."""
    manifest = json.loads((out / "manifest.json").read_text())
    tok = load_tokenizer(out)
    found: dict[str, dict[str, tuple[str, str]]] = {}
    for name in SPLITS:
        entry = manifest["splits"][name]
        for shard in entry["shards"]:
            assert sha256(out / shard["file"]) == shard["sha256"]
        for file, digest in entry["files"].items():
            assert sha256(out / file) == digest
        stream = np.concatenate([np.load(out / s["file"]) for s in entry["shards"]])
        assert stream.dtype == np.dtype(manifest["dtype"]) and len(stream) == entry["tokens"]
        assert [len(np.load(out / s["file"])) for s in entry["shards"]] == [s["tokens"] for s in entry["shards"]]
        offsets = np.load(out / name / "doc_offsets.npy")
        domains = np.load(out / name / "doc_domains.npy")
        ids = [json.loads(line) for line in (out / name / "doc_ids.jsonl").read_text().splitlines()]
        assert offsets.dtype == np.int64 and domains.dtype == np.uint16
        assert len(offsets) == len(ids) + 1 == len(domains) + 1 == entry["documents"] + 1
        assert offsets[0] == 0 and offsets[-1] == len(stream)
        assert (stream[offsets[1:] - 1] == tok.eod_id).all() and (stream == tok.eod_id).sum() == len(ids)
        docs = {}
        for i, doc_id in enumerate(ids):
            docs[doc_id] = (tok.decode(stream[offsets[i] : offsets[i + 1] - 1]), manifest["domains"][domains[i]])
        found[name] = docs
        by_domain = {d: {"documents": 0, "tokens": 0, "bytes": 0, "chars": 0} for d in manifest["domains"]}
        for i, (text, domain) in enumerate(docs.values()):
            stats = by_domain[domain]
            stats["documents"] += 1
            stats["tokens"] += int(offsets[i + 1] - offsets[i])
            stats["bytes"] += len(text.encode())
            stats["chars"] += len(text)
        assert entry["by_domain"] == {d: s for d, s in by_domain.items() if s["documents"]}
        assert {k: entry[k] for k in ("documents", "tokens", "bytes", "chars")} == {
            k: sum(s[k] for s in by_domain.values()) for k in ("documents", "tokens", "bytes", "chars")
        }
    return found


def no_leftovers(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_bytes_dataset_is_complete_and_round_trips(tmp_path):
    docs = texts(300)
    corpus = write_corpus(tmp_path / "web.jsonl", docs)
    out = tmp_path / "data"
    manifest = prepare([str(corpus)], out, tokenizer="bytes", domain_field="meta.set", split=(0.8, 0.1, 0.1), shard_tokens=4000, **FAST)
    assert set(manifest) == MANIFEST_KEYS and manifest == json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "languini-data/1" and manifest["dtype"] == "uint16"
    assert manifest["sources"] == [{"spec": str(corpus), "domain": None, "kind": "jsonl"}]
    assert manifest["domains"] == ["books", "web"]
    assert manifest["tokenizer"] == {**manifest["tokenizer"], "kind": "bytes", "file": None, "vocab_size": 257, "eod_id": 256}
    assert len(manifest["splits"]["train"]["shards"]) > 3  # documents straddle shards
    found = load_documents(out)
    originals = {f"doc-{hashlib.md5(t.encode()).hexdigest()[:8]}": (t, ["web", "books"][i % 2]) for i, t in enumerate(docs)}
    assert {k: v for split in found.values() for k, v in split.items()} == originals
    for name, split in found.items():
        assert all(split_of(text.encode(), (0.8, 0.1, 0.1)) == name for text, _ in split.values())
    assert not (out / "tokenizer.model").exists() and no_leftovers(tmp_path)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "test", "train", "validation"]


def test_sentencepiece_dataset_round_trips_and_does_not_depend_on_workers(tmp_path):
    root = sources.stdlib_root()
    docs = [p.read_text(encoding="utf-8")[:3000] for p in sources.stdlib_files(root)[:40]] + texts(40)
    corpus = write_corpus(tmp_path / "code.jsonl", docs)
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "note.txt").write_text("a plain note\u2581with SentencePiece's mark\n")
    args = ([f"mixed={corpus}", str(folder)],)
    options = dict(vocab_size=450, split=(0.6, 0.2, 0.2), progress=False)
    one = prepare(*args, tmp_path / "one", workers=1, **options)
    two = prepare(*args, tmp_path / "two", workers=2, **options)
    assert one["fingerprint"] == two["fingerprint"]
    assert one["tokenizer"]["vocab_size"] == 450 and (tmp_path / "one" / "tokenizer.model").is_file()
    assert one["domains"] == ["mixed", "notes"]
    found = load_documents(tmp_path / "one")
    decoded = sorted(text for split in found.values() for text, _ in split.values())
    assert decoded == sorted(docs + ["a plain note\u2581with SentencePiece's mark\n"])


def test_split_membership_is_stable_and_proportional(tmp_path):
    u = [split_of(t.encode(), (0.8, 0.1, 0.1)) for t in texts(5000)]
    assert abs(u.count("train") / 5000 - 0.8) < 0.03 and abs(u.count("test") / 5000 - 0.1) < 0.02
    first = prepare([str(write_corpus(tmp_path / "a.jsonl", texts(200)))], tmp_path / "a", tokenizer="bytes", split=(0.8, 0.1, 0.1), **FAST)
    second = prepare([str(write_corpus(tmp_path / "b.jsonl", texts(200, start=100) + texts(50)))], tmp_path / "b", tokenizer="bytes", split=(0.8, 0.1, 0.1), **FAST)
    assert first["fingerprint"] != second["fingerprint"]
    split_a = {doc_id: name for name, docs in load_documents(tmp_path / "a").items() for doc_id in docs}
    split_b = {doc_id: name for name, docs in load_documents(tmp_path / "b").items() for doc_id in docs}
    shared = split_a.keys() & split_b.keys()
    assert len(shared) == 150 and all(split_a[k] == split_b[k] for k in shared)


def test_training_sample_ignores_order_and_follows_the_seed():
    def sample(docs: list[str], seed: int) -> TrainingSample:
        s = TrainingSample(5000, seed)
        for text in docs:
            s.offer(text, text.encode())
        return s

    docs = texts(400)
    a, b, c = sample(docs, 0), sample(docs[::-1], 0), sample(docs, 1)
    assert a.texts() == b.texts() != c.texts()
    assert 4900 < a.size <= 5000 and a.size == sum(map(len, a.texts()))


def test_stdlib_source_through_prepare(tmp_path, monkeypatch):
    for i in range(5):
        (tmp_path / "lib" / f"m{i}.py").parent.mkdir(exist_ok=True)
        (tmp_path / "lib" / f"m{i}.py").write_text(f'"""Module {i}."""\n# comment {i}\nx = {i}\n')
    monkeypatch.setattr(sources, "stdlib_root", lambda: tmp_path / "lib")
    manifest = prepare(["builtin:stdlib"], tmp_path / "data", tokenizer="bytes", split=(0.5, 0.25, 0.25), **FAST)
    assert manifest["domains"] == ["code", "prose"]
    ids = {i for split in load_documents(tmp_path / "data").values() for i in split}
    assert {f"stdlib/m{i}.py" for i in range(5)} | {f"stdlib/m{i}.py#prose" for i in range(5)} <= ids


def test_bad_lines_and_invalid_utf8_are_counted(tmp_path):
    corpus = write_corpus(tmp_path / "c.jsonl", texts(60))
    corpus.write_bytes(corpus.read_bytes() + b"{broken\n" + b'{"text": "bad \xff byte"}\n' + b'{"text": ""}\n')
    with pytest.raises(UserError, match=r"c\.jsonl:61: malformed JSON"):
        prepare([str(corpus)], tmp_path / "data", tokenizer="bytes", split=(0.5, 0.25, 0.25), **FAST)
    assert not (tmp_path / "data").exists() and no_leftovers(tmp_path)
    manifest = prepare([str(corpus)], tmp_path / "data", tokenizer="bytes", split=(0.5, 0.25, 0.25), skip_bad_lines=True, **FAST)
    assert (manifest["bad_lines_skipped"], manifest["invalid_utf8_replaced"], manifest["empty_documents_skipped"]) == (1, 1, 1)
    assert sum(s["documents"] for s in manifest["splits"].values()) == 61


def test_a_bad_line_deep_in_a_large_file_is_named_by_its_line(tmp_path, monkeypatch):
    """Workers read slices of a large file without knowing their first line; the message
    still names the line, counted from the slices before it."""
    monkeypatch.setattr(sources, "TASK_BYTES", 2_000)
    corpus = write_corpus(tmp_path / "c.jsonl", texts(300))
    lines = corpus.read_bytes().split(b"\n")
    lines[250] = b"{broken"
    corpus.write_bytes(b"\n".join(lines))
    with pytest.raises(UserError, match=r"c\.jsonl:251: malformed JSON"):
        prepare([str(corpus)], tmp_path / "data", tokenizer="bytes", split=(0.5, 0.25, 0.25), workers=2, progress=False)
    manifest = prepare([str(corpus)], tmp_path / "data", tokenizer="bytes", split=(0.5, 0.25, 0.25), skip_bad_lines=True, **FAST)
    assert manifest["bad_lines_skipped"] == 1 and sum(s["documents"] for s in manifest["splits"].values()) == 299


def test_a_source_that_changes_between_the_passes_is_refused(tmp_path, monkeypatch):
    """Pass two reads the sources again: a file that grew in between would make the counts
    and the shards disagree, so the run stops instead."""
    from languini.data import prepare as module

    corpus = write_corpus(tmp_path / "c.jsonl", texts(100))
    train_tokenizer = module.make_tokenizer

    def growing(*args, **kwargs):
        with corpus.open("a") as f:
            f.write(json.dumps({"text": "a late arrival"}) + "\n")
        return train_tokenizer(*args, **kwargs)

    monkeypatch.setattr(module, "make_tokenizer", growing)
    with pytest.raises(UserError, match="the sources changed while they were being prepared"):
        prepare([str(corpus)], tmp_path / "data", tokenizer="bytes", split=(0.5, 0.25, 0.25), **FAST)
    assert not (tmp_path / "data").exists() and no_leftovers(tmp_path)


def test_out_holding_another_dataset_is_refused_unless_forced(tmp_path):
    corpus = write_corpus(tmp_path / "c.jsonl", texts(60))
    out = tmp_path / "data"
    options = dict(tokenizer="bytes", split=(0.5, 0.25, 0.25), **FAST)
    first = prepare([str(corpus)], out, **options)
    assert prepare([str(corpus)], out, **options)["fingerprint"] == first["fingerprint"]  # a re-run rewrites
    with pytest.raises(UserError, match="already holds a dataset prepared from other sources or settings"):
        prepare([str(corpus)], out, **{**options, "split": (0.6, 0.2, 0.2)})
    write_corpus(corpus, texts(61))  # same request, different input
    with pytest.raises(UserError, match="from different input data"):
        prepare([str(corpus)], out, **options)
    assert json.loads((out / "manifest.json").read_text())["fingerprint"] == first["fingerprint"]
    assert prepare([str(corpus)], out, force=True, **options)["fingerprint"] != first["fingerprint"]
    assert no_leftovers(tmp_path)


def test_failed_run_leaves_the_previous_dataset_untouched(tmp_path):
    corpus = write_corpus(tmp_path / "c.jsonl", texts(60))
    out = tmp_path / "data"
    prepare([str(corpus)], out, tokenizer="bytes", split=(0.5, 0.25, 0.25), **FAST)
    before = {p: sha256(p) for p in out.rglob("*") if p.is_file()}
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "fine"}\n{"text": 3}\n')
    with pytest.raises(UserError, match=r'broken\.jsonl:2: the record has no string field "text"'):
        prepare([str(corpus), str(broken)], out, tokenizer="bytes", split=(0.5, 0.25, 0.25), force=True, **FAST)
    assert {p: sha256(p) for p in out.rglob("*") if p.is_file()} == before
    assert no_leftovers(tmp_path)


def test_out_that_is_not_a_dataset_is_never_replaced(tmp_path):
    corpus = write_corpus(tmp_path / "c.jsonl", texts(60))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="holds other files and no languini dataset"):
        prepare([str(corpus)], tmp_path / "mine", tokenizer="bytes", force=True, **FAST)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
    with pytest.raises(UserError, match="is a file, not a folder"):
        prepare([str(corpus)], corpus, tokenizer="bytes", force=True, **FAST)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sources=["missing.jsonl"]), "source not found: missing.jsonl"),
        (dict(sources=[]), "at least one source"),
        (dict(tokenizer="wordpiece"), "unknown tokenizer"),
        (dict(split=(0.9, 0.2, 0.1)), "sum to 1"),
        (dict(split=(1.0, 0.0, 0.0)), "three positive numbers"),
        (dict(workers=0), "workers must be at least 1"),
        (dict(shard_tokens=0), "shard_tokens must be at least 1"),
        (dict(docs=3), r"the (validation|test) split is empty at split fractions 0\.98/0\.01/0\.01 \(3 documents in all\)"),
        (dict(docs=0), "the sources hold no documents"),
    ],
)
def test_bad_input_is_one_user_error_and_writes_nothing(tmp_path, kwargs, message):
    corpus = write_corpus(tmp_path / "c.jsonl", texts(kwargs.pop("docs", 60)))
    options = {"sources": [str(corpus)], "tokenizer": "bytes", **kwargs}
    with pytest.raises(UserError, match=message):
        prepare(options.pop("sources"), tmp_path / "data", **{**FAST, **options})
    assert not (tmp_path / "data").exists() and no_leftovers(tmp_path)


def test_uint32_shards_hold_large_ids(tmp_path):
    writer = SplitWriter(tmp_path / "train", dtype=np.dtype(np.uint32), eod_id=70_000, domains=["d"], shard_tokens=3)
    tokens = np.array([1, 65_536, 69_999, 70_000, 70_000], dtype=np.uint32)
    writer.add(EncodedBatch("train", tokens, [4, 1], [DocInfo("x", "d", 3, 3), DocInfo("y", "d", 0, 0)]))
    entry = writer.close()
    stream = np.concatenate([np.load(tmp_path / s["file"]) for s in entry["shards"]])
    assert stream.dtype == np.uint32 and stream.tolist() == [1, 65_536, 69_999, 70_000, 70_000]
    assert [s["tokens"] for s in entry["shards"]] == [3, 2]
    assert np.load(tmp_path / "train" / "doc_offsets.npy").tolist() == [0, 4, 5]


def test_appended_npy_files_are_what_np_save_writes(tmp_path):
    """Shards and the document index are appended a batch at a time, never held whole."""
    for dtype, parts in ((np.int64, [[0], [4, 9], [], [2**40]]), (np.uint16, [[], []]), (np.uint32, [[7] * 1000, [70_000]])):
        appender = NpyAppender(tmp_path / "appended.npy", np.dtype(dtype))
        for part in parts:
            appender.append(np.array(part, dtype=dtype))
        appender.close()
        whole = np.array([x for part in parts for x in part], dtype=dtype)
        np.save(tmp_path / "saved.npy", whole)
        assert (tmp_path / "appended.npy").read_bytes() == (tmp_path / "saved.npy").read_bytes()


def test_progress_off_is_silent(tmp_path, capfd):
    prepare([str(write_corpus(tmp_path / "c.jsonl", texts(60)))], tmp_path / "data", tokenizer="bytes", split=(0.5, 0.25, 0.25), **FAST)
    assert capfd.readouterr() == ("", "")
