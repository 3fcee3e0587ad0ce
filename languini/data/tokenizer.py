"""Tokenizers of prepared data: a trained SentencePiece BPE, a user's `.model`, or raw bytes.

`prepare` builds one with `make_tokenizer` and records it in the manifest; everything after
(loader, evaluation) gets the same one back with `load_tokenizer(data_dir)`, which checks the
model file against the manifest's sha256 so a swapped file cannot silently change the ids.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from functools import partial
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence

import numpy as np

from languini.data.executors import Executor, run_tasks
from languini.errors import UserError
from languini.io import read_json, sha256_file

MODEL_FILE = "tokenizer.model"
KINDS = ("sentencepiece", "bytes")

SENTENCEPIECE_SETTINGS: dict[str, Any] = {
    "model_type": "bpe",
    "byte_fallback": True,  # every string is representable, no <unk> in practice
    "split_digits": True,
    "normalization_rule_name": "identity",  # decode(encode(text)) == text
    "add_dummy_prefix": False,
    "remove_extra_whitespaces": False,
    "allow_whitespace_only_pieces": True,  # runs of indentation become single pieces
    "user_defined_symbols": ["\n"],  # SentencePiece trains on lines; "\n" is its own piece
    "character_coverage": 0.9995,  # rarer characters fall back to bytes
    "max_sentence_length": 16384,
    "unk_id": 0,
    "eos_id": 1,
    "eos_piece": "<eod>",
    "bos_id": -1,
    "pad_id": -1,
    # One thread: BPE ties break differently with more, which would make the vocabulary
    # depend on the machine's core count; more threads barely speed BPE training up anyway.
    "num_threads": 1,
}
"""Trainer settings of the `sentencepiece` tokenizer; they are recorded in the manifest."""

_META = "\u2581"  # SentencePiece's whitespace symbol: decodes to " " unless spelled in bytes


class Tokenizer(Protocol):
    kind: str
    vocab_size: int
    eod_id: int
    sha256: str

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...

    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids`; end-of-document ids have no text and are dropped."""
        ...

    def manifest_entry(self) -> dict[str, Any]: ...


class ByteTokenizer:
    """Ids 0..255 are UTF-8 bytes, 256 ends a document: no training, nothing to ship."""

    kind = "bytes"
    vocab_size = 257
    eod_id = 256
    sha256 = hashlib.sha256(b"languini-bytes/1").hexdigest()

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        a = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=np.int64)
        return bytes(a[a < 256].astype(np.uint8)).decode("utf-8", errors="replace")

    def manifest_entry(self) -> dict[str, Any]:
        return {"kind": self.kind, "file": None, "vocab_size": self.vocab_size, "eod_id": self.eod_id, "sha256": self.sha256, "settings": {}}


class SentencePieceTokenizer:
    """A SentencePiece model file; its end-of-sequence piece ends documents.

    Text holding U+2581 (SentencePiece's own whitespace mark) is split there and the mark is
    spelled in byte pieces, so that decoding gives it back instead of a space.
    """

    kind = "sentencepiece"

    def __init__(self, path: Path, settings: dict[str, Any] | None = None, threads: int | None = None):
        import sentencepiece as spm

        self.path = Path(path)
        self.settings = settings or {}
        self.threads = threads or os.cpu_count() or 1
        try:
            self._sp = spm.SentencePieceProcessor(model_file=str(self.path))
        except (OSError, RuntimeError) as e:
            raise UserError(f"cannot load the SentencePiece model {self.path}: {e}") from None
        self.vocab_size = self._sp.get_piece_size()
        self.eod_id = self._sp.eos_id()
        if self.eod_id < 0:
            raise UserError(f"the SentencePiece model {self.path} has no end-of-sequence piece to end documents with; train it with eos_id set.")
        self.sha256 = sha256_file(self.path)
        meta_bytes = [self._sp.piece_to_id(f"<0x{b:02X}>") for b in _META.encode("utf-8")]
        self._meta_ids = meta_bytes if all(self._sp.is_byte(i) for i in meta_bytes) else None
        # With "\n" a user-defined piece no piece crosses a line, so lines encode independently.
        self._newline_id = self._sp.piece_to_id("\n") if "\n" in self.settings.get("user_defined_symbols", ()) else None

    def encode(self, text: str) -> list[int]:
        if self._meta_ids is None or _META not in text:
            return self._sp.encode(text)
        ids: list[int] = []
        for i, part in enumerate(text.split(_META)):
            ids += (self._meta_ids if i else []) + self._sp.encode(part)
        return ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode on all threads; each distinct line once when lines are independent (code
        repeats many lines: a quarter less work on the stdlib)."""
        if self._newline_id is None:
            return self._encode_many(texts)
        lines_of = [text.split("\n") for text in texts]
        unique = list(dict.fromkeys(line for lines in lines_of for line in lines))
        pieces = dict(zip(unique, self._encode_many(unique)))
        return [self._join_lines(lines, pieces) for lines in lines_of]

    def _encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        out = self._sp.encode(list(texts), num_threads=self.threads)
        for i, text in enumerate(texts):
            if _META in text:
                out[i] = self.encode(text)
        return out

    def _join_lines(self, lines: list[str], pieces: dict[str, list[int]]) -> list[int]:
        ids = list(pieces[lines[0]])
        for line in lines[1:]:
            ids.append(self._newline_id)  # type: ignore[arg-type]
            ids += pieces[line]
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return self._sp.decode(_int_list(ids))

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "file": MODEL_FILE,
            "vocab_size": self.vocab_size,
            "eod_id": self.eod_id,
            "sha256": self.sha256,
            "settings": self.settings,
        }


def _int_list(ids: Iterable[int]) -> list[int]:
    return ids.tolist() if isinstance(ids, np.ndarray) else [int(i) for i in ids]




def check_tokenizer_name(name: str) -> None:
    """Fail before any reading when `name` is neither a known kind nor an existing `.model`."""
    if name in KINDS:
        return
    if not name.endswith(".model"):
        raise UserError(f"unknown tokenizer {name!r}; use sentencepiece, bytes, or the path of a SentencePiece .model file.")
    if not Path(name).is_file():
        raise UserError(f"tokenizer model not found: {name}")


def needs_training(name: str) -> bool:
    return name == "sentencepiece"


def make_tokenizer(name: str, folder: Path, *, vocab_size: int, sample: Iterable[str] = (), seed: int = 0, threads: int = 1,
                   pool: Executor | None = None) -> Tokenizer:
    """The tokenizer `name` for a dataset being built in `folder`, its model file put there.

    `sample` (texts of the train split) is read only to train a `sentencepiece` tokenizer, on
    one of the workers of `pool` when given.
    """
    check_tokenizer_name(name)
    if name == "bytes":
        return ByteTokenizer()
    path = folder / MODEL_FILE
    if name == "sentencepiece":
        settings = {**SENTENCEPIECE_SETTINGS, "vocab_size": vocab_size, "seed": seed}
        train_sentencepiece(sample, path, vocab_size=vocab_size, seed=seed, pool=pool)
    else:
        settings = {"source": name}
        shutil.copyfile(name, path)
    return SentencePieceTokenizer(path, settings=settings, threads=threads)


def train_sentencepiece(texts: Iterable[str], path: Path, *, vocab_size: int, seed: int = 0, pool: Executor | None = None) -> None:
    """Train a BPE model on the lines of `texts` (SentencePiece learns from lines).

    The training runs on a worker of `pool` where there is one: SentencePiece's binding holds
    the process that trains until training returns, while a worker is ended at once. Without a
    pool it runs here, and a Ctrl-C waits until it returns (the lines are a list, so no Python
    code runs inside the training to swallow it; the sample is bounded by `--sample-bytes`).
    Training it in a one-off child process instead raced with a Ctrl-C arriving as that child
    started (it printed a traceback), so it does not."""
    lines = [line for text in texts for line in text.split("\n") if line]
    task = partial(sentencepiece_model, lines, vocab_size, seed)
    path.write_bytes(task() if pool is None else next(run_tasks(pool, [task], window=1)))


def sentencepiece_model(lines: list[str], vocab_size: int, seed: int) -> bytes:
    """The model file of a BPE trained on `lines` (run by the child process)."""
    import sentencepiece as spm

    spm.set_random_generator_seed(seed)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size, minloglevel=2, **SENTENCEPIECE_SETTINGS
        )
    except RuntimeError as e:  # too large a vocabulary for the sample, mostly
        reason = str(e).split("] ", 1)[-1]
        raise UserError(f"SentencePiece cannot train a {vocab_size}-piece vocabulary on this training sample: {reason}") from None
    return model.getvalue()


def load_tokenizer(data_dir: str | Path, threads: int | None = None) -> Tokenizer:
    """The tokenizer of a prepared dataset, checked against its manifest."""
    data_dir = Path(data_dir)
    return open_tokenizer(read_json(data_dir / "manifest.json", "data manifest")["tokenizer"], data_dir, threads)


def open_tokenizer(entry: dict[str, Any], data_dir: Path, threads: int | None = None) -> Tokenizer:
    """The tokenizer a manifest entry describes, its file in `data_dir` checked by sha256."""
    if entry["kind"] == "bytes":
        return ByteTokenizer()
    path = data_dir / entry["file"]
    if not path.is_file():
        raise UserError(f"the tokenizer file {path} is missing; prepare the data again.")
    if sha256_file(path) != entry["sha256"]:
        raise UserError(f"{path} does not match the sha256 in its manifest; prepare the data again.")
    return SentencePieceTokenizer(path, settings=entry["settings"], threads=threads)
