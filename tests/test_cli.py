import click
import pytest
from click.testing import CliRunner

from languini.cli import main


def leaves(group: click.Group, path: tuple[str, ...] = ()) -> list[list[str]]:
    """Every command below `group`, as the words that call it."""
    out = []
    for name, cmd in group.commands.items():
        out += leaves(cmd, (*path, name)) if isinstance(cmd, click.Group) else [[*path, name]]
    return out


PASSTHROUGH = [["lm-eval"]]  # lm-eval's own command line: its --help is lm-eval's
COMMANDS = [c for c in leaves(main) if c not in PASSTHROUGH]


def test_the_command_tree_is_what_the_readme_teaches():
    assert {" ".join(c) for c in COMMANDS} >= {
        "data prepare", "data dedup", "data make-tasks", "data select perplexity", "data select d4", "data doremi",
        "mix compare", "classes", "throughput", "calibrate", "budget", "train", "resume", "eval", "submit",
        "leaderboard", "fit", "plot"}


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_every_command_has_help_and_json(command):
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    assert "--json" in result.output


def test_classes_json_lists_languini_and_cpu_classes():
    import json

    result = CliRunner().invoke(main, ["classes", "--json"])
    names = {c["name"] for c in json.loads(result.output)}
    assert {"6h", "96h", "cpu-2m"} <= names


def test_bad_split_option_is_one_sentence(tmp_path):
    result = CliRunner().invoke(main, ["data", "prepare", "builtin:stdlib", "--out", str(tmp_path / "d"),
                                       "--split", "98/2"])
    assert result.exit_code == 2 and "--split takes three positive" in result.output
    assert not (tmp_path / "d").exists()


def test_dedup_through_the_cli(trained, tmp_path):
    import json

    from helpers import fails, invoke

    report = json.loads(invoke("data", "dedup", trained["data"], "--out", tmp_path / "d", "--decontaminate",
                               "--no-progress", "--json"))
    assert report["settings"]["bands"] * report["settings"]["rows"] <= 128
    assert (tmp_path / "d" / "manifest.json").exists()
    assert "threshold" in fails("data", "dedup", trained["data"], "--out", tmp_path / "e", "--threshold", 1.5)
    assert not (tmp_path / "e").exists()


def test_lm_eval_tasks_through_the_cli(trained, tmp_path):
    import json

    from helpers import fails, invoke

    made = json.loads(invoke("data", "make-tasks", trained["data"], "--out", tmp_path / "tasks", "--json"))
    assert made["tasks"] == ["languini_rolling", "languini_cloze"]
    out = json.loads(invoke("eval", trained["run"], "--tasks", "languini_rolling", "--limit", 2, "--include-path",
                            tmp_path / "tasks", "--device", "cpu", "--json"))
    assert out["tasks"]["languini_rolling"]["metrics"]["bits_per_byte,none"] > 0
    assert "Unknown lm-eval task" in fails("eval", trained["run"], "--tasks", "no_such_task", "--include-path",
                                           tmp_path / "tasks")
