import pytest

from languini.errors import UserError
from languini.family import load_family


def test_unknown_family_and_config_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="Unknown family"):
        load_family("transformer-xl")
    with pytest.raises(UserError, match="Cannot import"):
        load_family("no.such.module:Model")
    with pytest.raises(UserError, match="known: nano"):
        load_family("gpt").config("enormous")


def test_unknown_config_keys_are_errors(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text("n_layer = 1\nd_model = 32\nn_head = 2\nseq_len = 16\nvocab_size = 10\nwidth = 3\n")
    with pytest.raises(UserError, match="width"):
        load_family("gpt").config(str(path))


def test_config_from_a_toml_file(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text("n_layer = 1\nd_model = 32\nn_head = 2\nseq_len = 16\nvocab_size = 10\n[train]\nlr = 0.01\n")
    cfg, train = load_family("gpt").config(str(path))
    assert cfg.d_model == 32 and train == {"lr": 0.01}


def test_model_from_outside_the_repo_by_module_path():
    fam = load_family("baselines.gpt.model:GPT")
    assert fam.config("nano")[0].n_layer == 2
