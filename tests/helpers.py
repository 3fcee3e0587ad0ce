"""Helpers shared by the tests: a tiny corpus and a CLI runner that insists on success."""

import json
import random

from click.testing import CliRunner

WORDS = ("the cat sat on a mat while dogs ran past the old red barn and birds sang of rain "
         "over hills where quiet rivers meet green fields under a pale morning sky").split()

ANY_LOAD = ("--min-cpu-share", "0", "--spread-tolerance", "1e6", "--max-rounds", "1")
"""Throughput options for tests that need a certificate, not a steady machine: one round, never
marked noisy under any load, so it buys an hours budget and passes `submit`'s stability check.
The suite runs on shared machines; the stability guard has tests of its own (test_stability.py)."""


def tiny_corpus(path, n_docs=400, seed=0):
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(n_docs):
            domain = "verse" if i % 3 == 0 else "story"
            sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12))).capitalize() + "."
                         for _ in range(rng.randint(3, 8))]
            f.write(json.dumps({"id": f"doc-{i}", "text": " ".join(sentences), "meta": {"set": domain}}) + "\n")
    return path


def invoke(*args):
    from languini.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout  # progress bars and lm-eval's logs go to stderr


def edit_json(path, change):
    """Change a JSON file in place, as a hand or a careless script would."""
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))


def fails(*args):
    """Run the CLI expecting a user error: non-zero exit, no traceback; returns the output."""
    from languini.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.output


TINY_MODEL = "n_layer = 1\nd_model = 32\nn_head = 2\nseq_len = 64\nvocab_size = 257\n"


def tiny_setup(tmp):
    """Bytes-tokenised data, a one-layer model (model.toml) and its certificate (cert.json, batch
    8) in `tmp`: runs of it at the tiny FLOP classes train in seconds."""
    invoke("data", "prepare", tiny_corpus(tmp / "c.jsonl", n_docs=200), "--out", tmp / "data", "--tokenizer", "bytes",
           "--split", "90/5/5", "--no-progress")
    (tmp / "model.toml").write_text(TINY_MODEL)
    invoke("throughput", "--family", "gpt", "--config", tmp / "model.toml", "--data", tmp / "data", "--steps", 2,
           "--warmup", 1, "--batch-size", 8, "--out", tmp / "cert.json", "--no-progress", *ANY_LOAD)
    return tmp
