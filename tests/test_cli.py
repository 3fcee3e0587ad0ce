import pytest
from click.testing import CliRunner

from languini.cli import main

COMMANDS = [["data", "prepare"], ["classes"], ["throughput"], ["budget"], ["train"], ["eval"]]


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
