"""lm-eval tasks made from prepared data, to run offline with `languini.lm_eval_adapter`.

`make_tasks(DATA)` writes, by default into DATA/eval_tasks/ (so nothing generated lands in
the repository), two tasks over a split's documents (their decoded text, as scored by
`languini eval`):
- `languini_rolling`: every document's rolling log-likelihood, reported as bits per byte,
  byte and word perplexity, as lm-eval's wikitext task does;
- `languini_cloze`: a passage of `context_words` words from a document, and `choices`
  continuations of `continuation_words` words (default 32, 4 and 8): the true one and the
  others from other documents (accuracy, and accuracy normalised by length).
Each task is a jsonl data file and a YAML that includes its template in eval/tasks/ (what the
task does) and adds its name and data (absolute paths: lm-eval resolves data_files against
the working directory). Everything is a function of the data and the seed.
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from languini.data import derive
from languini.data.derive import DecodedDocument
from languini.data.loader import PreparedData
from languini.errors import UserError
from languini.io import atomic_dir
from languini import packaged

TASKS_DIR = packaged.data_dir("eval") / "tasks"
"""The shipped task folder: task YAMLs, and the templates generated tasks include."""

ROLLING, CLOZE = "languini_rolling", "languini_cloze"
TEMPLATES = {ROLLING: "_rolling_template_yaml", CLOZE: "_cloze_template_yaml"}
TASKS_VERSION = 1
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class ClozeSettings:
    """How cloze examples are drawn; recorded in the task's metadata."""

    context_words: int = 32
    continuation_words: int = 8
    choices: int = 4
    max_examples: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.context_words, self.continuation_words, self.max_examples) < 1 or self.choices < 2:
            raise UserError("Cloze context and continuation words and the example count must be positive, "
                            "and there must be at least two choices.")


@dataclass(frozen=True)
class TaskSet:
    """What `make_tasks` wrote: the task names, the folder to include, examples per task."""

    names: list[str]
    include_path: Path
    examples: dict[str, int]


def default_out_dir(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / "eval_tasks"


def documents(data: PreparedData, split: str) -> list[DecodedDocument]:
    """The split's non-empty documents as text (the text whose bytes `languini eval` divides
    by): a task needs them all at once, to draw distractors from."""
    return [doc for doc in derive.documents(data, split) if doc.text]


def cloze_examples(docs: list[DecodedDocument], settings: ClozeSettings) -> list[dict]:
    """Passages with their true continuation among distractors of as many words taken from
    other documents; each distractor starts with the true continuation's whitespace, so only
    the words differ. Deterministic in the documents and the seed."""
    draw = _ClozeDraw(docs, settings)
    need = settings.context_words + settings.continuation_words
    examples = []
    for d, words in enumerate(draw.words):
        if len(examples) == settings.max_examples:
            break
        if len(words) >= need and (example := draw.example(d)) is not None:
            examples.append(example)
    return examples


class _ClozeDraw:
    """One random generator drawing passages and distractors, in document order."""

    def __init__(self, docs: list[DecodedDocument], settings: ClozeSettings) -> None:
        self.docs, self.settings, self.rng = docs, settings, random.Random(settings.seed)
        self.words = [[w.span() for w in _WORD.finditer(doc.text)] for doc in docs]
        self.pool = [d for d, words in enumerate(self.words) if len(words) >= settings.continuation_words]

    def example(self, d: int) -> dict | None:
        """A passage of document d and its choices; None if too few other documents differ."""
        c, m = self.settings.context_words, self.settings.continuation_words
        text, words = self.docs[d].text, self.words[d]
        i = self.rng.randrange(len(words) - c - m + 1)
        truth = text[words[i + c - 1][1] : words[i + c + m - 1][1]]
        choices = self._distractors(d, truth)
        if choices is None:
            return None
        label = self.rng.randrange(self.settings.choices)
        choices.insert(label, truth)
        return {"id": f"{self.docs[d].id}@{i}", "domain": self.docs[d].domain,
                "context": text[words[i][0] : words[i + c - 1][1]], "choices": choices, "label": label}

    def _distractors(self, source: int, truth: str) -> list[str] | None:
        """choices − 1 distinct runs of as many words from other documents (a bounded number of
        draws, so a pool of near-duplicates ends the search)."""
        m, found = self.settings.continuation_words, []
        lead = truth[: len(truth) - len(truth.lstrip())]
        for _ in range(20 * self.settings.choices):
            d = self.rng.choice(self.pool)
            if d == source:
                continue
            words = self.words[d]
            j = self.rng.randrange(len(words) - m + 1)
            candidate = lead + self.docs[d].text[words[j][0] : words[j + m - 1][1]]
            if candidate != truth and candidate not in found:
                found.append(candidate)
                if len(found) == self.settings.choices - 1:
                    return found
        return None


def make_tasks(data_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, split: str = "test",
               cloze: ClozeSettings = ClozeSettings()) -> TaskSet:
    """Write the languini tasks for a prepared-data folder; returns their names and folder.

    The folder is replaced as a whole (built aside, then moved into place).
    """
    data = PreparedData(data_dir)
    out = Path(out_dir if out_dir is not None else default_out_dir(data.path)).resolve()
    missing = [name for name in TEMPLATES.values() if not (TASKS_DIR / name).is_file()]
    if missing:
        raise UserError(f"The task templates {', '.join(missing)} are missing from {TASKS_DIR}; they ship with "
                        "languini: reinstall it.")
    docs = documents(data, split)
    examples = cloze_examples(docs, cloze)
    if not examples:
        raise UserError(f"No {split} document of {data.path} has the {cloze.context_words + cloze.continuation_words} "
                        "words a cloze example needs (with others to take distractors from); ask for fewer words.")
    rows = {ROLLING: [asdict(doc) for doc in docs], CLOZE: examples}
    metadata = {"version": TASKS_VERSION, "data": str(data.path.resolve()), "data_fingerprint": data.fingerprint,
                "split": split}
    settings = {ROLLING: {}, CLOZE: {"cloze": asdict(cloze)}}
    with atomic_dir(out) as tmp:
        for name, task_rows in rows.items():
            (tmp / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in task_rows),
                                               encoding="utf-8")
            task = {"include": str(TASKS_DIR / TEMPLATES[name]), "task": name,
                    "dataset_kwargs": {"data_files": {"test": str(out / f"{name}.jsonl")}},
                    "metadata": {**metadata, **settings[name]}}
            (tmp / f"{name}.yaml").write_text(yaml.safe_dump(task, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return TaskSet(list(rows), out, {name: len(task_rows) for name, task_rows in rows.items()})
