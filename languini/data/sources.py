"""Readers that turn a source spec into documents.

A source is `builtin:stdlib`, `hf:NAME`, a `.jsonl`/`.jsonl.gz`/`.jsonl.zst` or `.parquet`
file, or a folder of `.txt` files, optionally labelled `NAME=SOURCE` to give all its
documents the domain NAME. Reading comes in two halves so that it can use every core and
stay memory-bounded on large corpora: `read_tasks` (cheap, in the calling process) cuts a
source into tasks, and each task (a picklable call that a worker process runs, which opens
the file itself) turns its slice into a `Batch` of documents: a line-aligned byte range of a
plain JSON-lines file, a whole compressed one, a Parquet row group, a few `.txt` files.
Every document keeps a source id (the record's `id`, else `file:line`, `file:row`,
`hf:NAME:row` or the file) so that a token can be traced back to where it came from.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib
import inspect
import io
import json
import os
import re
import sys
import sysconfig
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from languini.errors import UserError

TASK_BYTES = 4 << 20
"""About how much input text one read task carries: big enough to amortise the hand-off to
a worker, small enough that a few tasks in flight per core stay cheap in memory."""
FILE_TASK_BYTES = 1 << 20  # whole files are read by the worker: smaller tasks balance cores
WHOLE_FILE_BYTES = 32 << 20
"""The largest compressed file one worker reads whole (a stream cannot be entered mid-way, so
it is one task), as corpora of many compressed chunks ship (SlimPajama's are about 15 MB). A
larger one is decompressed by the calling process and handed out in blocks of TASK_BYTES,
so that no task holds more than about this much compressed input's documents."""

_JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")
_KNOWN_KINDS = "builtin:stdlib, hf:NAME, a .jsonl/.jsonl.gz/.jsonl.zst or .parquet file, or a folder of .txt files"
_LABEL = re.compile(r"[A-Za-z0-9_.\-]+")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


@dataclass(frozen=True)
class Document:
    text: str
    id: str
    domain: str


@dataclass
class Batch:
    """What one read task yields: documents plus the counts the manifest reports."""

    documents: list[Document] = field(default_factory=list)
    bad_lines: int = 0
    replaced: int = 0  # documents or lines whose invalid UTF-8 became U+FFFD
    lines: int = 0  # lines read, for a slice of a JSON-lines file
    bad_at: tuple[int, str] | None = None  # (line within the slice, reason): see `JsonlSlice`


@dataclass(frozen=True)
class Source:
    spec: str  # as the user wrote it, e.g. "web=data/a.jsonl.zst"
    location: str  # the part after an optional "NAME="
    kind: str  # stdlib | hf | jsonl | parquet | txt
    label: str | None  # the NAME of "NAME=SOURCE": the domain of all its documents

    def manifest_entry(self) -> dict[str, Any]:
        return {"spec": self.spec, "domain": self.label, "kind": self.kind}

    def natural_domain(self) -> str:
        """The domain of an unlabelled document when no domain field says otherwise."""
        if self.kind == "hf":
            return self.location[3:].rstrip("/").rsplit("/", 1)[-1]
        path = Path(self.location)
        if self.kind == "txt":
            return path.resolve().name
        name = path.name
        return next(name[: -len(s)] for s in (*_JSONL_SUFFIXES, ".parquet") if name.lower().endswith(s))


@dataclass(frozen=True)
class ReadOptions:
    domain_field: str | None = None  # dotted path into each record, e.g. "meta.redpajama_set_name"
    skip_bad_lines: bool = False


Task = Callable[[], Batch]


def parse_source(spec: str) -> Source:
    """Parse `SOURCE` or `NAME=SOURCE`, checking that the source exists and is a known kind."""
    label, location = _split_label(spec)
    return Source(spec=spec, location=location, kind=_kind_of(location), label=label)


def _split_label(spec: str) -> tuple[str | None, str]:
    name, sep, rest = spec.partition("=")
    if sep and _LABEL.fullmatch(name) and not Path(spec).exists():
        return name, rest
    return None, spec


def _kind_of(location: str) -> str:
    if location.startswith("builtin:"):
        if location == "builtin:stdlib":
            return "stdlib"
        raise UserError(f"unknown builtin source {location!r}; the only builtin source is builtin:stdlib.")
    if location.startswith("hf:"):
        if not location[3:]:
            raise UserError("the source 'hf:' names no dataset; write hf:NAME or hf:/path/to/saved/dataset.")
        return "hf"
    path = Path(location)
    if not path.exists():
        raise UserError(f"source not found: {location}")
    if path.is_dir():
        return "txt"
    name = path.name.lower()
    if name.endswith(_JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    raise UserError(f"unknown source kind for {location}; expected {_KNOWN_KINDS}.")


def read_tasks(source: Source, options: ReadOptions) -> Iterator[Task]:
    """The read tasks of one source, in a fixed order (so the dataset is reproducible)."""
    readers = {"stdlib": _stdlib_tasks, "txt": _txt_tasks, "jsonl": _jsonl_tasks, "parquet": _parquet_tasks, "hf": _hf_tasks}
    return readers[source.kind](source, options)


# --- text hygiene -----------------------------------------------------------------------


def decode_utf8(data: bytes) -> tuple[str, bool]:
    """The text of `data` and whether invalid UTF-8 had to be replaced by U+FFFD.

    A few bad bytes in one file of a large corpus should cost a character, not the run.
    """
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace"), True


def clean_str(text: str) -> tuple[str, bool]:
    """`text` without lone surrogates (JSON may escape them, UTF-8 cannot hold them)."""
    try:
        text.encode("utf-8")
        return text, False
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text), True


def _chunks_by_size(paths: list[Path]) -> Iterator[tuple[Path, ...]]:
    chunk: list[Path] = []
    size = 0
    for path in paths:
        chunk.append(path)
        size += path.stat().st_size
        if size >= FILE_TASK_BYTES:
            yield tuple(chunk)
            chunk, size = [], 0
    if chunk:
        yield tuple(chunk)


def _require(module: str, what: str) -> Any:
    """Import an optional dependency, or say in one sentence which package is missing."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise UserError(f"{what} need the {package} package (pip install {package}).") from None


def _read_file(batch: Batch, path: Path) -> str:
    text, replaced = decode_utf8(path.read_bytes())
    batch.replaced += replaced
    return text


# --- builtin:stdlib -----------------------------------------------------------------------

_STDLIB_SKIP = frozenset({"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"})


def stdlib_root() -> Path:
    """Where the running Python keeps its standard library (the base one inside a venv)."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path | None = None) -> list[Path]:
    """The stdlib's `.py` files, sorted, without installed packages and without test suites."""
    root = root or stdlib_root()
    files: list[Path] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _STDLIB_SKIP)
        files += [Path(folder, n) for n in sorted(names) if n.endswith(".py")]
    return files


def _stdlib_tasks(source: Source, options: ReadOptions) -> Iterator[Task]:
    root = stdlib_root()
    for chunk in _chunks_by_size(stdlib_files(root)):
        yield partial(read_stdlib_files, root, chunk, source.label)
    yield partial(read_pydoc_topics, source.label)


def read_stdlib_files(root: Path, paths: Iterable[Path], label: str | None = None) -> Batch:
    """Two documents per module: its source (domain `code`) and its prose (domain `prose`)."""
    batch = Batch()
    for path in paths:
        text = _read_file(batch, path)
        name = "stdlib/" + path.relative_to(root).as_posix()
        batch.documents.append(Document(text, name, label or "code"))
        prose = python_prose(text)
        if prose:
            batch.documents.append(Document(prose, name + "#prose", label or "prose"))
    return batch


def read_pydoc_topics(label: str | None = None) -> Batch:
    """The language reference texts that `help()` shows, one prose document per topic."""
    from pydoc_data.topics import topics

    docs = [Document(text, f"pydoc_data.topics:{name}", label or "prose") for name, text in sorted(topics.items())]
    return Batch(documents=docs)


_PY_TOKEN = re.compile(  # strings and comments; loops unrolled, which halves the scan time
    r"""(?=[rRbBuUfF'"\#])(?P<prefix>[rRbBuUfF]{0,2})(?P<string>
          '''[^'\\]*(?:(?:\\.|'(?!''))[^'\\]*)*'''
        | \"\"\"[^"\\]*(?:(?:\\.|"(?!""))[^"\\]*)*\"\"\"
        | '[^'\\\n]*(?:\\.[^'\\\n]*)*'
        | "[^"\\\n]*(?:\\.[^"\\\n]*)*"
        )
      | (?P<comment>\#[^\r\n]*)""",
    re.DOTALL | re.VERBOSE,
)
_REST_OF_LINE = re.compile(r"[ \t]*(?:#[^\r\n]*)?(?:\r?\n|$)")
_DOC_PREFIXES = frozenset({"", "r", "R", "u", "U"})


def python_prose(source: str) -> str:
    """The docstrings and comments of one Python module, in source order, as plain text.

    One regex scan over strings and comments instead of `tokenize`: on Python 3.11 tokenize
    is pure Python and alone costs more than the whole prepare budget; the tests check this
    scan against tokenize and ast on real stdlib files. A docstring here is a string
    statement on its own line at the top of the module or right after a line ending in `:`
    (def, class, if, ...), the places where Python code keeps its documentation; its text is
    taken as written (escapes are not interpreted) and dedented. Comment lines on
    consecutive lines form one paragraph; paragraphs are separated by a blank line.
    """
    blocks: list[str] = []
    last_code = ""  # the last significant character outside strings and comments
    end = 0  # where the previous string or comment ended
    in_comment = False  # whether the previous item was a comment paragraph
    for m in _PY_TOKEN.finditer(source):
        gap = source[end : m.start()]
        code = gap.rstrip()
        if code:
            last_code = code[-1]
        literal = m.group("string")
        if literal is None:
            text = m.group("comment").lstrip("#").strip()
            joins = in_comment and not code and gap.count("\n") == 1
            if joins:
                blocks[-1] += "\n" + text
            elif text:
                blocks.append(text)
            in_comment = joins or bool(text)
        else:
            if _is_docstring(source, m, last_code):
                quotes = 3 if len(literal) >= 6 and literal[:3] in ("'''", '"""') else 1
                blocks.append(inspect.cleandoc(literal[quotes:-quotes]))
            last_code = '"'
            in_comment = False
        end = m.end()
    blocks = [b.strip() for b in blocks]
    return "\n\n".join(b for b in blocks if b)


def _is_docstring(source: str, m: re.Match[str], last_code: str) -> bool:
    if m.group("prefix") not in _DOC_PREFIXES or last_code not in ("", ":"):
        return False
    line_start = source.rfind("\n", 0, m.start()) + 1
    return not source[line_start : m.start()].strip() and _REST_OF_LINE.match(source, m.end()) is not None


# --- folders of .txt files ----------------------------------------------------------------


def _txt_tasks(source: Source, options: ReadOptions) -> Iterator[Task]:
    folder = Path(source.location)
    files = sorted(p for p in folder.rglob("*.txt") if p.is_file())
    if not files:
        raise UserError(f"the folder {source.location} holds no .txt files.")
    for chunk in _chunks_by_size(files):
        yield partial(read_text_files, chunk, source.label or source.natural_domain(), os.getcwd())


def read_text_files(paths: Iterable[Path], domain: str, cwd: str = "") -> Batch:
    """One document per file; its id is the file's path as found (relative paths are read
    from `cwd`, the caller's, for a worker that runs elsewhere)."""
    batch = Batch()
    for path in paths:
        batch.documents.append(Document(_read_file(batch, Path(cwd, path)), path.as_posix(), domain))
    return batch


# --- records: JSON lines, Parquet rows, Hugging Face rows ---------------------------------


class _BadRecord(Exception):
    """A record without a usable text or domain; becomes a UserError or a skipped count."""


class BadRecordError(UserError):
    """A bad record the user did not ask to skip: where it is and why, in one sentence."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}; fix it or skip such records with --skip-bad-lines.")
        self.where, self.reason = where, reason

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # raised in a worker, re-raised in the driver
        return type(self), (self.where, self.reason)


@dataclass(frozen=True)
class RecordReader:
    """Turns records (dicts with `text`, optional `id`, optional domain field) into documents.

    One reader for JSON lines, Parquet rows and dataset rows, so the three agree on ids,
    domains and what counts as a bad record.
    """

    label: str | None
    natural_domain: str
    options: ReadOptions

    def add(self, batch: Batch, record: Any, where: str, fallback_id: str) -> None:
        try:
            batch.documents.append(self._document(batch, record, fallback_id))
        except _BadRecord as e:
            self.bad(batch, where, str(e))

    def bad(self, batch: Batch, where: str, reason: str) -> None:
        if not self.options.skip_bad_lines:
            raise BadRecordError(where, reason)
        batch.bad_lines += 1

    def _document(self, batch: Batch, record: Any, fallback_id: str) -> Document:
        if not isinstance(record, dict):
            raise _BadRecord("the record is not a JSON object")
        text = record.get("text")
        if isinstance(text, bytes):
            text, replaced = decode_utf8(text)
        elif isinstance(text, str):
            text, replaced = clean_str(text)
        else:
            raise _BadRecord('the record has no string field "text"')
        batch.replaced += replaced
        rid = record.get("id")
        return Document(text, fallback_id if rid is None else str(rid), self._domain(record))

    def _domain(self, record: dict) -> str:
        if self.label or not self.options.domain_field:
            return self.label or self.natural_domain
        value: Any = record
        for key in self.options.domain_field.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if value is None or value == "" or isinstance(value, (dict, list)):
            raise _BadRecord(f'the record has no value at domain field "{self.options.domain_field}"')
        return str(value)


def _record_reader(source: Source, options: ReadOptions) -> RecordReader:
    return RecordReader(source.label, source.natural_domain(), options)


def _jsonl_tasks(source: Source, options: ReadOptions) -> Iterator[Task]:
    """A plain file is cut into byte ranges and a compressed one up to WHOLE_FILE_BYTES is one
    task, which the workers read themselves, so the calling process never touches their text;
    a larger compressed one is decompressed here and handed out in blocks of whole lines."""
    reader = _record_reader(source, options)
    path = Path(source.location)
    with _reading(source.location):
        size = path.stat().st_size
        if not path.name.lower().endswith((".gz", ".zst")):
            for start in range(0, max(size, 1), TASK_BYTES):
                yield JsonlSlice(reader, source.location, str(path.resolve()), start, start + TASK_BYTES, 1 if start == 0 else None)
        elif size <= WHOLE_FILE_BYTES:
            yield CompressedJsonl(reader, source.location, str(path.resolve()))
        else:
            with _open_binary(path) as f:
                yield from _jsonl_blocks(reader, source.location, f)


@contextlib.contextmanager
def _reading(file: str) -> Iterator[None]:
    """A file that cannot be read or decompressed, said in one sentence."""
    try:
        yield
    except (OSError, EOFError, ValueError, *_zstd_error()) as e:  # (evaluated only when one was raised)
        raise UserError(f"cannot read {file}: {e}") from None


def _zstd_error() -> tuple[type[Exception], ...]:
    """zstandard's error (an Exception of its own), where a .zst file was opened."""
    zstandard = sys.modules.get("zstandard")
    return (zstandard.ZstdError,) if zstandard else ()


@dataclass(frozen=True)
class CompressedJsonl:
    """A whole compressed JSON-lines file, read by the worker that runs it: a corpus of many
    compressed chunks is read by all workers (or Ray nodes, from shared storage) at once."""

    reader: RecordReader
    file: str  # as the user wrote it: ids and messages name it so
    path: str  # absolute, for a worker with another working directory

    def __call__(self) -> Batch:
        batch = Batch()
        with _reading(self.file), _open_binary(Path(self.path)) as f:
            for block in _jsonl_blocks(self.reader, self.file, f):
                part = block()
                batch.documents += part.documents
                batch.bad_lines += part.bad_lines
                batch.replaced += part.replaced
                batch.lines += part.lines
        return batch


def _jsonl_blocks(reader: RecordReader, file: str, f: io.BufferedIOBase) -> Iterator[Task]:
    first, rest = 1, b""
    while block := f.read(TASK_BYTES):
        data = rest + block
        cut = data.rfind(b"\n") + 1
        if cut:
            yield partial(parse_jsonl_block, reader, file, first, data[:cut])
            first += data.count(b"\n", 0, cut)
        rest = data[cut:]
    if rest:
        yield partial(parse_jsonl_block, reader, file, first, rest)


def _open_binary(path: Path) -> io.BufferedIOBase:
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if name.endswith(".zst"):
        return io.BufferedReader(_require("zstandard", ".zst files").open(path, "rb"))
    return open(path, "rb")


@dataclass(frozen=True)
class JsonlSlice:
    """The lines of a plain JSON-lines file that start in its bytes [start, end): consecutive
    slices cover every line once, wherever their edges fall, so a worker reads its part of a
    large file without any other process scanning for line ends.

    `first_line` is the number of the slice's first line when known (1 for the first slice).
    When None, lines are numbered from 1 within the slice and a bad record is not raised but
    reported in `Batch.bad_at`, for the caller, who learns the line counts of the slices
    before it in order, to name the real line (see `LineNumbers`).
    """

    reader: RecordReader
    file: str  # as the user wrote it: ids and messages name it so
    path: str  # absolute, for a worker with another working directory
    start: int
    end: int
    first_line: int | None

    def __call__(self) -> Batch:
        try:
            with open(self.path, "rb") as f:
                lo = _line_start(f, self.start)
                hi = _line_start(f, self.end)
                f.seek(lo)
                data = f.read(max(0, hi - lo))
        except OSError as e:
            raise UserError(f"cannot read {self.file}: {e}") from None
        return parse_jsonl_block(self.reader, self.file, self.first_line, data)


def _line_start(f: io.BufferedIOBase, pos: int) -> int:
    """Where the first line starting at or after byte `pos` begins (the file's size if none)."""
    if pos <= 0:
        return 0
    size = os.fstat(f.fileno()).st_size
    if pos >= size:
        return size
    f.seek(pos - 1)
    offset = pos - 1
    while block := f.read(1 << 16):
        i = block.find(b"\n")
        if i >= 0:
            return offset + i + 1
        offset += len(block)
    return offset


class LineNumbers:
    """The numbers of the first lines of a file's slices, from the line counts of the slices
    before them, consumed in file order: how a slice read without them gets its ids and
    messages right."""

    def __init__(self) -> None:
        self._next = 1

    def first(self, task: "JsonlSlice", lines: int) -> int:
        """The first line of `task`, which holds `lines` lines; call in task order."""
        if task.start == 0:
            self._next = 1
        first = self._next
        self._next += lines
        return first


def parse_jsonl_block(reader: RecordReader, file: str, first_line: int | None, data: bytes) -> Batch:
    """Parse the whole lines of `data`, the first numbered `first_line`; blank lines are not
    records. With `first_line` None (see `JsonlSlice`) lines count from 1 and the first bad
    record ends the batch in `bad_at` instead of an error."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    batch = Batch(lines=len(lines))
    for number, raw in enumerate(lines, first_line or 1):
        if not raw.strip():
            continue
        text, replaced = decode_utf8(raw)
        batch.replaced += replaced
        where = f"{file}:{number}"
        try:
            try:
                record = json.loads(text)
            except ValueError as e:
                reader.bad(batch, where, f"malformed JSON ({getattr(e, 'msg', e)})")
                continue
            reader.add(batch, record, where, where)
        except BadRecordError as e:
            if first_line is not None:
                raise
            return Batch(lines=len(lines), bad_at=(number, e.reason))
    return batch


def _parquet_tasks(source: Source, options: ReadOptions) -> Iterator[Task]:
    pq = _require("pyarrow.parquet", "Parquet sources")
    try:
        pf = pq.ParquetFile(source.location)
    except Exception as e:  # pyarrow raises ArrowInvalid and friends for a damaged file
        raise UserError(f"cannot read {source.location} as Parquet: {e}") from None
    columns = _record_columns(pf.schema_arrow.names, source.location, options)
    reader, path, row = _record_reader(source, options), str(Path(source.location).resolve()), 0
    for group in range(pf.num_row_groups):
        yield partial(read_row_group, reader, source.location, path, group, columns, row)
        row += pf.metadata.row_group(group).num_rows


def read_row_group(reader: RecordReader, where: str, path: str, group: int, columns: list[str], first_row: int) -> Batch:
    """One Parquet row group, read by the worker itself (the caller only read the footer)."""
    import pyarrow.parquet as pq

    return parse_rows(reader, where, first_row, pq.ParquetFile(path).read_row_group(group, columns=columns).to_pylist())


def _hf_tasks(source: Source, options: ReadOptions) -> Iterator[Task]:
    name = source.location[3:]
    ds = _load_hf(name)
    columns = _record_columns(ds.column_names, source.location, options)
    tables = ds.select_columns(columns).with_format("arrow").iter(batch_size=4096)
    yield from _arrow_tasks(_record_reader(source, options), source.location, tables)


def _load_hf(name: str) -> Any:
    """A saved dataset when `name` is a path, else the hub dataset's train split."""
    datasets = _require("datasets", "hf: sources")
    try:
        ds = datasets.load_from_disk(name) if Path(name).exists() else datasets.load_dataset(name, split="train")
    except Exception as e:  # the hub client raises many types; all mean "cannot load this name"
        raise UserError(f"cannot load the Hugging Face dataset {name!r}: {e}") from None
    if isinstance(ds, datasets.DatasetDict):
        if "train" not in ds:
            raise UserError(f"the dataset {name!r} has no train split (it has {', '.join(ds)}).")
        ds = ds["train"]
    return ds


def _record_columns(names: list[str], where: str, options: ReadOptions) -> list[str]:
    """The columns a record reader needs, checking that the text (and domain) column exist."""
    if "text" not in names:
        raise UserError(f'{where} has no column "text" (it has {", ".join(names)}).')
    columns = ["text"] + (["id"] if "id" in names else [])
    if options.domain_field:
        top = options.domain_field.split(".")[0]
        if top not in names:
            raise UserError(f'{where} has no column "{top}" for the domain field {options.domain_field}.')
        columns += [top] if top not in columns else []
    return columns


def _arrow_tasks(reader: RecordReader, where: str, tables: Iterable[Any]) -> Iterator[Task]:
    row = 0
    for table in tables:
        yield partial(parse_rows, reader, where, row, table.to_pylist())
        row += table.num_rows


def parse_rows(reader: RecordReader, where: str, first_row: int, rows: list[dict]) -> Batch:
    """Rows numbered from `first_row` (0-based, as data frames count them)."""
    batch = Batch()
    for number, row in enumerate(rows, first_row):
        reader.add(batch, row, f"{where} row {number}", f"{where}:{number}")
    return batch
