"""Standard output is for the result alone: every command that has --json, run as a real
process (so what lm-eval, `datasets` or torch write to the real stdout is caught too), prints
exactly one JSON document there, in the situations that warn: a mix selected under another
tokenizer trained with --any-tokenizer, a resume of a changed config with --force, lm-eval
tasks. Warnings and progress go to stderr."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from helpers import ANY_LOAD, tiny_corpus

from languini.cli import main

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
QUIET = "--no-progress"


def json_commands(group: click.Group = main, prefix: tuple[str, ...] = ()) -> set[str]:
    """The command tree's commands that take --json, as "data prepare", "train", ..."""
    found = set()
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            found |= json_commands(cmd, (*prefix, name))
        elif any(p.name == "as_json" for p in cmd.params):
            found.add(" ".join((*prefix, name)))
    return found


def cases(trained: dict, tmp: Path) -> list[tuple[str, tuple]]:
    """(command, its arguments) in an order where each finds what the earlier ones made."""
    data, run, cert = trained["data"], trained["run"], trained["cert"]
    nano = ("--family", "gpt", "--config", "nano")
    return [
        ("classes", ()),
        ("data prepare", (tiny_corpus(tmp / "c.jsonl"), "--out", tmp / "bytes", "--tokenizer", "bytes",
                          "--domain-field", "meta.set", "--split", "80/10/10", QUIET)),
        ("data dedup", (tmp / "bytes", "--out", tmp / "bytes-dedup", QUIET)),
        ("data make-tasks", (data,)),
        ("data select perplexity", (data, "--reference", run, "--out", tmp / "ppl", QUIET)),
        ("data select d4", (data, "--embedder", run, "--clusters", 2, "--out", tmp / "d4", QUIET)),
        ("data doremi", (data, *nano, "--class", "test-flops", "--out", tmp / "doremi.toml", QUIET)),
        ("mix compare", (tmp / "moved.toml", *nano, "--class", "test-flops", "--any-tokenizer", "--out",
                         tmp / "compare", QUIET)),
        ("throughput", (*nano, "--data", data, "--steps", 2, "--warmup", 0, *ANY_LOAD, QUIET)),
        ("calibrate", ("--config", "mini", "--batch-size", 1, "--steps", 1, "--warmup", 0, "--out", tmp / "cal.json",
                       *ANY_LOAD, QUIET)),
        ("budget", ("--class", "cpu-10s", "--throughput", cert)),
        ("train", (*nano, "--class", "test-flops", "--mix", tmp / "moved.toml", "--any-tokenizer",
                   "--out", tmp / "mixed", QUIET)),
        ("train", (*nano, "--data", data, "--class", "flops-3e11", "--out", tmp / "resumed", "--resume", "--force",
                   "--lr", 1e-3, QUIET)),
        ("resume", (tmp / "unfinished", QUIET)),
        ("eval", (tmp / "resumed", "--split", "validation", QUIET)),
        ("eval", (tmp / "resumed", "--tasks", "languini_rolling,languini_cloze", "--limit", 3, QUIET)),
        ("submit", (run, "--out", tmp / "bundle")),
        ("verify", (tmp / "bundle", "--data", trained["data"])),
        ("leaderboard", (tmp / "bundle", run)),
        ("site", (tmp / "bundle", "--out", tmp / "site")),
        ("fit", (tmp / "points.csv", "--law", "power", "--bootstrap", 10, "--out", tmp / "fit.json")),
        ("plot", (tmp / "fit.json", "--out", tmp / "fit.png")),
    ]


def prepare(name: str, trained: dict, tmp: Path) -> None:
    """What a case needs that no earlier command makes."""
    if name == "mix compare":  # the perplexity selection's mix, pointed at data with another tokenizer
        spec = (tmp / "ppl.toml").read_text()
        (tmp / "moved.toml").write_text(re.sub(r'^data = ".*"$', f'data = "{tmp / "bytes"}"', spec, flags=re.M))
    elif name == "train" and not (tmp / "resumed").exists():  # finished runs with their results taken away
        for copy in ("resumed", "unfinished"):
            shutil.copytree(trained["run"], tmp / copy)
            (tmp / copy / "result.json").unlink()
    elif name == "fit":
        rows = [("gpt", 0.01, 3.2), ("gpt", 0.02, 3.0), ("gpt", 0.04, 2.9), ("gpt", 0.08, 2.85)]
        (tmp / "points.csv").write_text("group,compute,loss\n" + "".join(f"{g},{c},{v}\n" for g, c, v in rows))


def test_every_json_command_prints_one_document_on_stdout(trained, test_classes, tmp_path):
    todo = cases(trained, tmp_path)
    assert {name for name, _ in todo} == json_commands()  # a new --json command needs a case here
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    warned = []
    for name, args in todo:
        prepare(name, trained, tmp_path)
        proc = subprocess.run([sys.executable, "-m", "languini.cli", *name.split(), *map(str, args), "--json"],
                              capture_output=True, text=True, cwd=tmp_path, env=env)
        assert proc.returncode == 0, (name, proc.stderr[-3000:])
        try:
            json.loads(proc.stdout)
        except json.JSONDecodeError as e:
            pytest.fail(f"`languini {name} --json` printed more than one JSON document ({e}): {proc.stdout[:2000]}")
        warned += [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert any("do not transfer across tokenizers" in w for w in warned)  # the situations did warn, on stderr
    assert any("changed since its checkpoint; resuming anyway" in w for w in warned)
