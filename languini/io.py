"""Atomic file and folder writes: a reader sees the old content or the new, never half.

Every result the harness writes goes through here, so an interrupted command never leaves a
truncated file where a good one stood. The JSON style and the TOML writer live here too, so
every file of one format is written one way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Iterator

from languini.errors import UserError
from languini.interrupts import shielded


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _first_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(path: str | os.PathLike, folder: bool = False) -> None:
    """Refuse, before any work is done, a `path` that cannot be written: a file where a folder
    must be (or a folder where a file must be), or a place that takes no new files."""
    path = Path(path)
    want, other = ("folder", "file") if folder else ("file", "folder")
    if path.exists() and path.is_dir() != folder:
        raise UserError(f"Cannot write {path}: it is a {other}, not a {want}.")
    ancestor = _first_existing(path.parent)
    if not ancestor.is_dir():
        raise UserError(f"Cannot write {path}: {ancestor} is a file, not a folder.")
    try:  # a real write: permissions say nothing to root, and nothing of read-only file systems
        fd, probe = tempfile.mkstemp(prefix=".languini-probe-", dir=ancestor)
    except OSError as e:
        raise UserError(f"Cannot write {path}: {ancestor} takes no new files ({e.strerror}).") from None
    os.close(fd)
    os.unlink(probe)


def _cannot_write(path: Path, e: OSError, folder: bool = False) -> UserError:
    """The OSError of writing `path` said as one sentence (checked again to name the cause)."""
    try:
        check_writable(path, folder)
    except UserError as named:
        return named
    return UserError(f"Cannot write {path} ({e.strerror or e}).")


def writable_parent(path: Path, folder: bool = False) -> Path:
    """`path`'s folder, made if missing; a place that cannot be made is a UserError."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _cannot_write(path, e, folder) from None
    return path.parent


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync it, then rename over `path`."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=writable_parent(path))
    except OSError as e:
        raise _cannot_write(path, e) from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are as shareable as any file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with shielded(), contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise _cannot_write(path, e) from None
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file, read in blocks so shards of any size fit in memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def to_json(obj: Any) -> str:
    """The one JSON style of the project: indented, keys in insertion order, newline-terminated."""
    return json.dumps(obj, indent=2, allow_nan=False) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, to_json(obj))


def read_json(path: str | os.PathLike, what: str) -> Any:
    """Read a JSON file the harness wrote, turning a missing or truncated file into a UserError."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{what} at {path} is not valid JSON ({e.msg if hasattr(e, 'msg') else e}).") from None


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_value(v: Any) -> str:
    """A TOML scalar or array of scalars. JSON's string escapes are TOML's too, except that TOML
    also wants DEL escaped."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def toml_key(k: str) -> str:
    return k if _BARE_KEY.match(k) else toml_value(k)


def toml_table(table: dict[str, Any], name: str = "") -> str:
    """The one TOML writer: scalars first, then each nested table under its dotted name; None
    is left out (TOML has no null: a missing key reads back as None)."""
    lines = [f"[{name}]"] if name else []
    lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items() if v is not None and not isinstance(v, dict)]
    for k, v in table.items():
        if isinstance(v, dict):
            lines.append("\n" + toml_table(v, f"{name}.{toml_key(k)}" if name else toml_key(k)).rstrip("\n"))
    return "\n".join(lines) + "\n"


def read_toml(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """Read a TOML file a user wrote, turning a missing or malformed file into a UserError."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{what} {path} is not valid TOML ({e}).") from None


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a folder under a temporary name and move it into place only when complete.

    Yields the temporary folder. On success an existing `path` is replaced (the caller decides
    beforehand whether replacing is allowed); on any exception, Ctrl-C and SIGTERM included,
    the temporary folder is removed and `path` is left as it was. Neither the removal nor the
    swap can be cut short by a second Ctrl-C (it waits until they are done).
    """
    path = Path(path)
    check_writable(path, folder=True)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=writable_parent(path, folder=True)))
    except OSError as e:
        raise _cannot_write(path, e, folder=True) from None
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
    except BaseException:
        with shielded():
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    with shielded():
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
