"""Streaming `prepare` writes the same dataset as the two-pass prepare with a spill file did.

The expected hashes below were computed with the code before streaming (commit 14d683e, which
spilled every document to a pickle and read sources in one driver process) on exactly these
inputs; `python tests/test_prepare_golden.py` prints them again. Same input, same settings:
same fingerprint, same shards, same splits, byte for byte, however the read pass is cut into
tasks (small TASK_BYTES here, so files are split into many line-aligned byte ranges).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import sys
from pathlib import Path

import pytest

from languini.data import sources
from languini.data.prepare import TrainingSample, prepare

JSONL_FINGERPRINT = "0286d4b9107c8306188bb56218de33223a852bcb1f956b807b74288fc3e51244"
JSONL_FILES = "4482d01cb09dd415567443af56d2fa33fbcb9f81ec9d0969cdbbbfb3ffffe862"
CHUNKS_FINGERPRINT = "f843b52aeac3fb2ad84705efa989d407ac9e5e9989d60f6b6ec4eb830b314931"
STDLIB_INPUT = "777690d39d1ec14f2e2f0a7bb170c162b33190b60a84ebe46b27fbdaf531191d"  # the digest of the stdlib the expected stdlib output was made from
STDLIB_FINGERPRINT = "1bdbf59ee2b7becd5e2da7e6fa74669f87e46c6375375634e3ba319e5ab608b9"
STDLIB_FILES = "45c949c8aefb1d74c7bba248c1fec249e2975aadde307e05f8e23f0263ec924a"

WORDS = "alpha beta gamma delta río café 中文 naïve over the lazy dog jumps quick brown fox 0123 4567".split()


def _text(rng: random.Random) -> str:
    n = int(rng.lognormvariate(3.5, 1.0)) + 1
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))) for _ in range(max(1, n // 8))]
    return "\n".join(lines)[: 20 * n]


def write_inputs(folder: Path) -> list[str]:
    """Three JSON-lines files (plain, gzip, zstd) and a folder of notes, with the oddities a real
    corpus has: records without ids, blank lines, a malformed line, invalid UTF-8, empty texts."""
    import zstandard

    rng = random.Random(17)
    lines: dict[str, list[bytes]] = {"a.jsonl": [], "b.jsonl.gz": [], "c.jsonl.zst": []}
    for name, n in (("a.jsonl", 1500), ("b.jsonl.gz", 400), ("c.jsonl.zst", 400)):
        for i in range(n):
            record = {"text": _text(rng), "meta": {"set": rng.choice(["web", "books", "code"])}}
            if i % 5:
                record["id"] = f"{name}-{i}"
            lines[name].append(json.dumps(record, ensure_ascii=i % 2 == 0).encode() + b"\n")
            if i % 97 == 0:
                lines[name].append(b"\n")
            if i % 211 == 0:
                lines[name].append(b'{"text": "broken\n')
            if i % 157 == 0:
                lines[name].append(b'{"text": "bad \xff byte ' + str(i).encode() + b'", "meta": {"set": "web"}}\n')
            if i % 301 == 0:
                lines[name].append(b'{"text": "", "meta": {"set": "web"}}\n')
    (folder / "a.jsonl").write_bytes(b"".join(lines["a.jsonl"])[:-1])  # no final newline
    (folder / "b.jsonl.gz").write_bytes(gzip.compress(b"".join(lines["b.jsonl.gz"]), mtime=0))
    (folder / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(b"".join(lines["c.jsonl.zst"])))
    (folder / "notes").mkdir()
    for i in range(30):
        (folder / "notes" / f"n{i:02d}.txt").write_text(_text(rng), encoding="utf-8")
    return ["a.jsonl", "b.jsonl.gz", "c.jsonl.zst", "notes=notes"]


def write_chunks(folder: Path) -> list[str]:
    """A corpus as SlimPajama ships one: many compressed chunks (gzip and zstd here), with a
    malformed line and invalid UTF-8 among the records."""
    import zstandard

    rng, specs = random.Random(23), []
    for k in range(6):
        lines = []
        for i in range(150):
            record = {"text": _text(rng), "meta": {"set": rng.choice(["web", "books", "code"])}}
            lines.append(json.dumps(record, ensure_ascii=i % 2 == 0).encode() + b"\n")
            if i % 61 == k:
                lines.append(b'{"text": "broken\n' if k % 2 else b'{"text": "bad \xff byte", "meta": {"set": "web"}}\n')
        name, data = f"chunk{k}.jsonl.{'zst' if k % 2 else 'gz'}", b"".join(lines)
        (folder / name).write_bytes(zstandard.ZstdCompressor().compress(data) if k % 2 else gzip.compress(data, mtime=0))
        specs.append(name)
    return specs


def files_digest(out: Path) -> str:
    """sha256 over every file of a dataset but its manifest (whose creation time varies)."""
    h = hashlib.sha256()
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name != "manifest.json"):
        h.update(path.relative_to(out).as_posix().encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def stdlib_digest() -> str:
    """What the builtin:stdlib source reads on this Python: its files and the pydoc topics."""
    from pydoc_data.topics import topics

    root = sources.stdlib_root()
    h = hashlib.sha256()
    for path in sources.stdlib_files(root):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    h.update(json.dumps(topics, sort_keys=True).encode())
    return h.hexdigest()


def prepare_jsonl(folder: Path, workers: int) -> tuple[str, str]:
    os.chdir(folder)  # relative specs: ids and the manifest name files as written, not tmp paths
    specs = write_inputs(folder)
    manifest = prepare(specs, "out", vocab_size=400, sample_bytes=60_000, domain_field="meta.set", split=(0.8, 0.1, 0.1),
                       skip_bad_lines=True, shard_tokens=20_000, workers=workers, progress=False)
    return manifest["fingerprint"], files_digest(folder / "out")


def prepare_chunks(folder: Path, workers: int) -> str:
    os.chdir(folder)
    manifest = prepare(write_chunks(folder), "out", vocab_size=300, sample_bytes=40_000, domain_field="meta.set",
                       split=(0.8, 0.1, 0.1), skip_bad_lines=True, workers=workers, progress=False)
    return manifest["fingerprint"]


def prepare_stdlib(out: Path, workers: int) -> tuple[str, str]:
    manifest = prepare(["builtin:stdlib"], out, workers=workers, progress=False)
    return manifest["fingerprint"], files_digest(out)


@pytest.mark.parametrize("workers", [1, 2])
def test_jsonl_corpus_prepares_to_the_recorded_dataset(tmp_path, monkeypatch, workers):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sources, "TASK_BYTES", 20_000)
    assert prepare_jsonl(tmp_path, workers) == (JSONL_FINGERPRINT, JSONL_FILES)


def test_sample_texts_left_behind_by_the_workers_are_fetched(tmp_path, monkeypatch):
    """Workers send a train text only while it can still enter the tokenizer's sample; with
    none sent, every kept one is read again, and the dataset is the same."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sources, "TASK_BYTES", 20_000)
    monkeypatch.setattr(TrainingSample, "ceiling", lambda self: -1)
    assert prepare_jsonl(tmp_path, workers=2) == (JSONL_FINGERPRINT, JSONL_FILES)


@pytest.mark.parametrize("reader", ["workers", "caller"])
def test_compressed_chunks_read_by_workers_prepare_as_read_by_one_process(tmp_path, monkeypatch, reader):
    """Each chunk is one task that a worker reads whole, or (over WHOLE_FILE_BYTES) the calling
    process decompresses it into blocks: both give the dataset that one process reading
    everything gave before the workers read compressed files."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sources, "TASK_BYTES", 20_000)
    if reader == "caller":
        monkeypatch.setattr(sources, "WHOLE_FILE_BYTES", 0)
    assert prepare_chunks(tmp_path, workers=2) == CHUNKS_FINGERPRINT


@pytest.mark.slow
def test_stdlib_prepares_to_the_recorded_dataset(tmp_path):
    if stdlib_digest() != STDLIB_INPUT:
        pytest.skip("this Python's standard library differs from the one the expected dataset was prepared from")
    assert prepare_stdlib(tmp_path / "out", workers=2) == (STDLIB_FINGERPRINT, STDLIB_FILES)


if __name__ == "__main__":  # print the expected values from the code at hand
    import tempfile

    sources.TASK_BYTES = 20_000
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        print("JSONL", *prepare_jsonl(Path(tmp), workers=2))
        os.chdir(here)
    with tempfile.TemporaryDirectory() as tmp:
        print("CHUNKS", prepare_chunks(Path(tmp), workers=1))
        os.chdir(here)
    with tempfile.TemporaryDirectory() as tmp:
        print("STDLIB", stdlib_digest(), *prepare_stdlib(Path(tmp) / "out", workers=2), file=sys.stdout)
