"""Readers: every source kind, ids, domains, bad input, and the stdlib extraction."""

from __future__ import annotations

import ast
import dataclasses
import gzip
import io
import json
import tokenize
from pathlib import Path

import pytest

from languini.data import sources
from languini.data.sources import Batch, ReadOptions, parse_source, python_prose, read_tasks
from languini.errors import UserError

RECORDS = [
    {"text": "first document", "id": "a1", "meta": {"set": "web"}},
    {"text": "second\ndocument", "meta": {"set": "books"}},
]


def read_all(spec: str, **options) -> Batch:
    """Run a source's tasks in this process and merge their batches."""
    total = Batch()
    for task in read_tasks(parse_source(spec), ReadOptions(**options)):
        batch = task()
        total.documents += batch.documents
        total.bad_lines += batch.bad_lines
        total.replaced += batch.replaced
    return total


def write_jsonl(path: Path, records: list, extra_lines: tuple[bytes, ...] = ()) -> Path:
    data = b"".join(json.dumps(r).encode() + b"\n" for r in records) + b"".join(extra_lines)
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    elif path.name.endswith(".zst"):
        import zstandard

        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", ["c.jsonl", "c.jsonl.gz", "c.jsonl.zst"])
def test_jsonl_kinds_give_texts_ids_and_natural_domain(tmp_path, name):
    path = write_jsonl(tmp_path / name, RECORDS)
    docs = read_all(str(path)).documents
    assert [d.text for d in docs] == ["first document", "second\ndocument"]
    assert [d.id for d in docs] == ["a1", f"{path}:2"]  # the id field, else file:line
    assert {d.domain for d in docs} == {"c"}  # the file stem without its suffixes


@pytest.mark.parametrize("name", ["c.jsonl.gz", "c.jsonl.zst"])
def test_a_compressed_file_is_one_task_that_reads_it_itself(tmp_path, monkeypatch, name):
    """The calling process hands out where the file is, not its text (a worker or Ray node
    reads it); lines are numbered across the file's decompressed blocks; over
    WHOLE_FILE_BYTES the caller decompresses it into tasks of TASK_BYTES instead."""
    import pickle

    monkeypatch.setattr(sources, "TASK_BYTES", 1000)
    records = [{"text": f"document {i} " * 20} for i in range(300)]
    path = write_jsonl(tmp_path / name, records, (b"{not json\n",))
    tasks = list(read_tasks(parse_source(str(path)), ReadOptions()))
    assert len(tasks) == 1 and len(pickle.dumps(tasks[0])) < 1000  # the file holds 75 kB of text
    with pytest.raises(UserError, match=rf"{name}:301: malformed JSON"):
        tasks[0]()
    monkeypatch.setattr(sources, "WHOLE_FILE_BYTES", 0)
    assert len(list(read_tasks(parse_source(str(path)), ReadOptions()))) > 50
    assert [d.text for d in read_all(str(path), skip_bad_lines=True).documents] == [r["text"] for r in records]


@pytest.mark.parametrize("name, damage", [("c.jsonl.gz", lambda data: data[:-6]), ("c.jsonl.zst", lambda data: data[:4] + b"x" * 40)])
def test_a_damaged_compressed_file_is_a_user_error_of_the_task(tmp_path, name, damage):
    path = tmp_path / name
    path.write_bytes(damage(write_jsonl(tmp_path / f"good-{name}", RECORDS).read_bytes()))
    (task,) = read_tasks(parse_source(str(path)), ReadOptions())
    with pytest.raises(UserError, match=rf"cannot read .*{name}"):
        task()


def test_domain_field_by_dotted_path_and_label_override(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", RECORDS)
    assert [d.domain for d in read_all(str(path), domain_field="meta.set").documents] == ["web", "books"]
    assert {d.domain for d in read_all(f"mine={path}", domain_field="meta.set").documents} == {"mine"}


def test_parquet_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist(RECORDS), path)
    docs = read_all(str(path), domain_field="meta.set").documents
    assert [(d.text, d.id, d.domain) for d in docs] == [
        ("first document", "a1", "web"),
        ("second\ndocument", f"{path}:1", "books"),
    ]


def test_parquet_without_text_column_is_a_user_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist([{"body": "x"}]), path)
    with pytest.raises(UserError, match='no column "text"'):
        read_all(str(path))


def test_txt_folder_one_document_per_file(tmp_path):
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("bee")
    (folder / "sub" / "a.txt").write_text("ay")
    (folder / "skip.md").write_text("not a txt")
    docs = read_all(str(folder)).documents
    assert [(d.text, d.id, d.domain) for d in docs] == [("bee", f"{folder}/b.txt", "notes"), ("ay", f"{folder}/sub/a.txt", "notes")]


def test_hf_dataset_saved_to_disk(tmp_path):
    import datasets

    path = tmp_path / "saved"
    datasets.Dataset.from_list([{"text": "hello", "kind": "x"}, {"text": "world", "kind": "y"}]).save_to_disk(str(path))
    docs = read_all(f"hf:{path}", domain_field="kind").documents
    assert [(d.text, d.id, d.domain) for d in docs] == [("hello", f"hf:{path}:0", "x"), ("world", f"hf:{path}:1", "y")]


def test_hf_dataset_that_cannot_be_loaded_is_a_user_error():
    with pytest.raises(UserError, match="cannot load the Hugging Face dataset"):
        read_all("hf:languini-no-such-org/no-such-dataset")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("missing.jsonl", "source not found"),
        ("builtin:nope", "unknown builtin source"),
        ("hf:", "names no dataset"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(UserError, match=message):
        parse_source(spec)


def test_unknown_file_kind(tmp_path):
    (tmp_path / "data.csv").write_text("text\nx\n")
    with pytest.raises(UserError, match="unknown source kind"):
        parse_source(str(tmp_path / "data.csv"))


def test_empty_txt_folder(tmp_path):
    with pytest.raises(UserError, match="holds no .txt files"):
        read_all(str(tmp_path))


@pytest.mark.parametrize(
    "line, reason",
    [
        (b"{not json\n", "malformed JSON"),
        (b'["a list"]\n', "the record is not a JSON object"),
        (b'{"body": "no text"}\n', 'the record has no string field "text"'),
    ],
)
def test_bad_line_names_file_and_line_or_is_skipped_and_counted(tmp_path, line, reason):
    path = write_jsonl(tmp_path / "c.jsonl", RECORDS, (b"\n", line))  # line 3 blank, line 4 bad
    with pytest.raises(UserError, match=rf"c\.jsonl:4: {reason}.*--skip-bad-lines"):
        read_all(str(path))
    batch = read_all(str(path), skip_bad_lines=True)
    assert (len(batch.documents), batch.bad_lines) == (2, 1)


def test_missing_domain_field_is_a_bad_line(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": "no meta"}])
    with pytest.raises(UserError, match='c.jsonl:1: the record has no value at domain field "meta.set"'):
        read_all(str(path), domain_field="meta.set")


def test_invalid_utf8_and_lone_surrogates_are_replaced_and_counted(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"text": "caf\xe9"}\n{"text": "ok"}\n{"text": "half \\ud800 pair"}\n')
    batch = read_all(str(path))
    assert [d.text for d in batch.documents] == ["caf\ufffd", "ok", "half \ufffd pair"]
    assert batch.replaced == 2
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "x.txt").write_bytes(b"bad \xff byte")
    batch = read_all(str(folder))
    assert (batch.documents[0].text, batch.replaced) == ("bad \ufffd byte", 1)


def test_stdlib_discovery_skips_tests_packages_and_non_python(tmp_path, monkeypatch):
    for name in ["a.py", "pkg/b.py", "pkg/tests/t.py", "test/t.py", "idlelib/idle_test/t.py", "site-packages/x/y.py", "notes.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text('"""Doc of %s."""\nx = 1  # a comment\n' % name)
    monkeypatch.setattr(sources, "stdlib_root", lambda: tmp_path)
    docs = read_all("builtin:stdlib").documents
    own = [d for d in docs if d.id.startswith("stdlib/")]
    assert [(d.id, d.domain) for d in own] == [
        ("stdlib/a.py", "code"),
        ("stdlib/a.py#prose", "prose"),
        ("stdlib/pkg/b.py", "code"),
        ("stdlib/pkg/b.py#prose", "prose"),
    ]
    assert own[1].text == "Doc of a.py.\n\na comment"
    topics = [d for d in docs if d.id.startswith("pydoc_data.topics:")]
    assert topics and {d.domain for d in topics} == {"prose"}


def test_real_stdlib_files_read_as_code_and_prose():
    root = sources.stdlib_root()
    files = sources.stdlib_files(root)
    assert len(files) > 300 and not any("site-packages" in p.parts or "test" in p.parts for p in files)
    batch = sources.read_stdlib_files(root, files[:20])
    assert {d.domain for d in batch.documents} == {"code", "prose"}
    assert batch.documents[0].text == files[0].read_text(encoding="utf-8")


PROSE_EXAMPLE = '''#!/usr/bin/env python
# Module comment, line one
# and line two.
"""Module docstring."""
import os  # trailing comment

x = "# not a comment"
y = {"key":  # the key
     "value"}


class A:
    r"""Class docstring
        with an indented second line."""

    def f(self):
        b"""bytes are not docstrings"""
        s = """not a docstring"""
        return s
'''


def test_python_prose_finds_docstrings_and_comments():
    assert python_prose(PROSE_EXAMPLE) == (
        "!/usr/bin/env python\nModule comment, line one\nand line two.\n\nModule docstring.\n\ntrailing comment\n\n"
        "the key\n\nClass docstring\nwith an indented second line."
    )


@pytest.mark.parametrize("index", range(0, 400, 40))
def test_python_prose_agrees_with_tokenize_and_ast(index):
    """The regex scan finds exactly tokenize's comments and every docstring ast knows."""
    path = sources.stdlib_files()[index]
    source = path.read_text(encoding="utf-8")
    prose = python_prose(source)
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    for tok in tokens:
        if tok.type == tokenize.COMMENT and tok.string.lstrip("#").strip():
            assert tok.string.lstrip("#").strip() in prose
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and "\\" not in doc:  # escapes are kept as written, ast interprets them
                assert doc.strip() in prose, (path, node)


@pytest.mark.parametrize("task_bytes", [7, 64, 1000, 10**6])
def test_slices_of_a_file_hold_every_line_once_with_its_number(tmp_path, monkeypatch, task_bytes):
    """Slice edges fall anywhere (mid-line, on a newline, past lines longer than a slice);
    the lines come out once each, in order, numbered as in the file."""
    import random

    rng = random.Random(task_bytes)
    records = [{"text": "x" * rng.choice([0, 1, 5, 300]) + str(i), "meta": {"set": "web"}} for i in range(120)]
    path = write_jsonl(tmp_path / "c.jsonl", records, extra_lines=(b"\n", b'{"text": "last, no newline"}'))
    monkeypatch.setattr(sources, "TASK_BYTES", task_bytes)
    numbers, docs = sources.LineNumbers(), []
    for task in read_tasks(parse_source(str(path)), ReadOptions()):
        blind = dataclasses.replace(task, first_line=None)
        first = numbers.first(task, blind().lines)
        docs += dataclasses.replace(task, first_line=first)().documents
    assert [d.text for d in docs] == [r["text"] for r in records] + ["last, no newline"]
    assert [d.id for d in docs] == [f"{path}:{n}" for n in [*range(1, 121), 122]]
