"""`languini plot`: both laws in every format, with and without bootstrap, and its errors."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from languini import scaling
from languini.cli import main
from languini.io import atomic_write_json

MAGIC = {"png": b"\x89PNG", "svg": b"<svg", "pdf": b"%PDF"}


def _power_points():
    compute = np.geomspace(0.01, 1, 6)
    return [scaling.Point(group=g, loss=float(E + A * c ** -a), compute=float(c), source=f"{g} {c:g}")
            for g, E, A, a in (("gpt", 1.0, 2.0, 0.3), ("qlstm", 1.0, 3.0, 0.5)) for c in compute]


def _chinchilla_points():
    params = {"E": 1.7, "A": 400.0, "alpha": 0.34, "B": 2000.0, "beta": 0.36}
    n, d = np.meshgrid(np.geomspace(1e6, 1e8, 4), np.geomspace(1e7, 1e9, 4))
    loss = scaling.predict(scaling.LAWS["chinchilla"], params, n, d)
    return [scaling.Point(group="m", loss=float(l), params=float(a), tokens=float(b), source="grid")
            for a, b, l in zip(n.ravel(), d.ravel(), loss.ravel())]


@pytest.fixture(scope="module")
def fits(tmp_path_factory):
    """fit.json files: power with two crossing groups, chinchilla, and power without bootstrap."""
    folder = tmp_path_factory.mktemp("fits")
    made = {
        "power": scaling.fit(scaling.Inputs(_power_points(), "reference-hours", "loss"), "power",
                             bootstrap=50, extrapolate=[30.0]),
        "chinchilla": scaling.fit(scaling.Inputs(_chinchilla_points(), "FLOPs", "loss"), "chinchilla",
                                  bootstrap=20, extrapolate=[1e20]),
        "power-plain": scaling.fit(scaling.Inputs(_power_points(), "reference-hours", "loss"), "power",
                                   bootstrap=0, crossing_range=(0.01, 1.0)),
    }
    for name, result in made.items():
        atomic_write_json(folder / f"{name}.json", result)
    return folder


@pytest.mark.parametrize("fmt", sorted(MAGIC))
@pytest.mark.parametrize("law", ["power", "chinchilla"])
def test_plot_writes_every_format_for_both_laws(fits, tmp_path, law, fmt):
    out = tmp_path / f"figure.{fmt}"
    result = CliRunner().invoke(main, ["plot", str(fits / f"{law}.json"), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"figure": str(out)}
    assert MAGIC[fmt] in out.read_bytes()[:200]


def test_plot_without_bootstrap_or_crossing_draws_the_statement(fits, tmp_path):
    fit = json.loads((fits / "power-plain.json").read_text())
    assert fit["intersections"][0]["compute"] is None
    out = tmp_path / "plain.svg"
    assert CliRunner().invoke(main, ["plot", str(fits / "power-plain.json"), "--out", str(out)]).exit_code == 0
    assert "do not cross" in out.read_text()


@pytest.mark.parametrize("name, content, words", [
    ("figure.jpg", None, "must end in .png, .svg or .pdf"),
    ("figure.png", {"not": "a fit"}, "is not a fit written by `languini fit`"),
])
def test_plot_errors_are_one_sentence(fits, tmp_path, name, content, words):
    source = fits / "power.json"
    if content is not None:
        source = tmp_path / "other.json"
        source.write_text(json.dumps(content))
    out = tmp_path / name
    result = CliRunner().invoke(main, ["plot", str(source), "--out", str(out)])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert result.output.count("\n") == 1 and words in result.output
    assert not out.exists()
