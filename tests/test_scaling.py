"""Scaling-law fits: a published reproduction, recovery of known laws, bootstrap coverage,
crossings, frontier selection, every input kind, and every bad input through the CLI."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from languini import scaling
from languini.cli import main
from languini.run import RunResult

EPOCH_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "chinchilla_svg_extracted_data.csv"
POWER = scaling.LAWS["power"]


def synthetic(group, E, A, alpha, compute, noise, seed):
    """Points on E + A·C^(−α) with multiplicative log-normal noise."""
    rng = np.random.default_rng(seed)
    loss = (E + A * compute ** -alpha) * np.exp(rng.normal(0, noise, len(compute)))
    return [scaling.Point(group=group, loss=float(l), compute=float(c), source=f"{group} #{i}")
            for i, (c, l) in enumerate(zip(compute, loss))]


def fit_points(points, law="power", **kwargs):
    return scaling.fit(scaling.Inputs(points, "hours", "loss"), law, **kwargs)


def write_csv(path, rows, columns=("group", "compute", "loss")):
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        w.writerows(rows)
    return path


def write_run(folder, family="gpt", config="nano", compute=0.01, bpb=3.0, compute_class="cpu-1m", mix="natural"):
    """A finished run's result.json holding what a fit reads, the rest filler; written as a
    careless script would, so a NaN goes in."""
    folder.mkdir(parents=True)
    result = RunResult(
        family=family, config=config, params=1_000_000, compute_class=compute_class,
        reference="local", tokens_trained=500_000, reference_hours=compute, mix=mix,
        test={"bits_per_byte": bpb, "token_perplexity": math.exp(bpb)},
        model_config={}, device="cpu", device_factor=1.0, budget_tokens=500_000, steps=100, wall_seconds=1.0,
        train_tokens_per_second=5e5, data_wait_fraction=0.0, epochs=1.0, final_train_loss=3.0, implementation=None,
        data={"path": "data", "fingerprint": "f"}, unigram_bits_per_byte=5.0,
    )
    (folder / "result.json").write_text(json.dumps(result.to_dict()))
    return folder


# --- the published analysis ---------------------------------------------------------------


@pytest.mark.skipif(not EPOCH_CSV.exists(), reason=f"Epoch AI's Chinchilla data not found at {EPOCH_CSV}")
def test_reproduces_the_chinchilla_replication_from_its_data():
    points = scaling.read_epoch_chinchilla(EPOCH_CSV)
    assert len(points) == 240
    g = scaling.fit_group(scaling.LAWS["chinchilla"], "chinchilla", points)
    assert g.starts == 4500
    # Besiroglu et al. 2024, exact replication of the Chinchilla procedure.
    published = {"E": 1.817, "alpha": 0.3473, "beta": 0.3672, "A": 477.9, "B": 2143.9}
    for name, value in published.items():
        assert g.params[name] == pytest.approx(value, rel=0.01), name


# --- recovery, bootstrap, crossings -------------------------------------------------------


def test_power_law_recovers_known_parameters():
    points = synthetic("a", E=1.5, A=2.0, alpha=0.4, compute=np.geomspace(0.01, 10, 12), noise=0.002, seed=0)
    g = fit_points(points, bootstrap=0)["groups"]["a"]
    assert g["params"] == pytest.approx({"E": 1.5, "A": 2.0, "alpha": 0.4}, rel=0.03)
    assert g["intervals"] is None and g["starts"] == 175


def test_bootstrap_intervals_cover_the_truth():
    truth = {"E": 1.5, "A": 2.0, "alpha": 0.4}
    covered = {name: 0 for name in truth}
    for seed in range(10):
        points = synthetic("a", **truth, compute=np.geomspace(0.01, 10, 15), noise=0.01, seed=seed)
        g = fit_points(points, bootstrap=300, seed=seed)["groups"]["a"]
        assert g["bootstrap"]["converged"] >= 295
        for name, (low, high) in g["intervals"].items():
            covered[name] += low <= truth[name] <= high
            assert low < g["params"][name] < high
    assert all(count >= 8 for count in covered.values()), covered


def test_bootstrap_is_skipped_when_points_equal_parameters():
    points = synthetic("a", E=1.5, A=2.0, alpha=0.4, compute=np.geomspace(0.01, 10, 3), noise=0.01, seed=0)
    result = fit_points(points, bootstrap=100)
    g = result["groups"]["a"]
    assert g["intervals"] is None and "the data itself" in g["bootstrap"]["skipped"]
    assert "a: no intervals" in scaling.markdown(result)


def test_crossing_of_two_curves_is_found_where_it_is():
    compute = np.geomspace(0.01, 1, 8)
    # Equal E: 2·C^-0.3 = 3·C^-0.5 exactly at C = 1.5^5, beyond the data, as in Languini.
    points = (synthetic("gpt", E=1.0, A=2.0, alpha=0.3, compute=compute, noise=0.001, seed=1)
              + synthetic("qlstm", E=1.0, A=3.0, alpha=0.5, compute=compute, noise=0.001, seed=2))
    result = fit_points(points, bootstrap=300, extrapolate=[100.0])
    (x,) = result["intersections"]
    assert x["groups"] == ["gpt", "qlstm"]
    assert x["compute"] == pytest.approx(1.5 ** 5, rel=0.25)
    assert x["interval"][0] < 1.5 ** 5 < x["interval"][1]
    assert x["fraction_crossing"] > 0.9
    assert result["groups"]["gpt"]["predictions"][0]["interval"] is not None


def test_parallel_curves_are_reported_as_not_crossing():
    compute = np.geomspace(0.01, 1, 8)
    points = (synthetic("a", E=1.0, A=2.0, alpha=0.4, compute=compute, noise=0.001, seed=1)
              + synthetic("b", E=1.3, A=2.0, alpha=0.4, compute=compute, noise=0.001, seed=2))
    (x,) = fit_points(points, bootstrap=200)["intersections"]
    assert x["compute"] is None and x["interval"] is None
    assert 0 <= x["fraction_crossing"] < 0.5
    assert "do not cross between" in x["statement"]


def test_crossings_interpolates_the_last_sign_change_and_lists_every_one():
    grid = np.geomspace(1, 100, 101)
    twice = (np.log(grid) - np.log(2)) * (np.log(grid) - np.log(20))  # crosses at 2 and at 20
    diff = np.stack([np.log(grid) - np.log(10), np.ones_like(grid), twice])
    found = scaling.crossings(diff, grid)
    assert found[0] == pytest.approx(10, rel=1e-9) and np.isnan(found[1])
    assert found[2] == pytest.approx(20, rel=1e-2)
    assert scaling.every_crossing(twice, grid) == pytest.approx([2, 20], rel=1e-2)


def test_two_crossings_report_the_one_that_settles_the_order():
    compute = np.geomspace(0.01, 1, 8)
    # b starts worse, dips below a, and a's steeper tail overtakes it again past the data
    a = synthetic("a", E=1.0, A=2.0, alpha=0.5, compute=compute, noise=0.0005, seed=1)
    b = synthetic("b", E=1.6, A=0.25, alpha=1.2, compute=compute, noise=0.0005, seed=2)
    (x,) = fit_points(a + b, bootstrap=100, crossing_range=(0.01, 100.0))["intersections"]
    assert len(x["all_crossings"]) == 2 and x["point_estimate"] == x["all_crossings"][-1]
    assert "a ahead beyond" in x["statement"] and "also cross earlier" in x["statement"]


def test_compute_optimal_allocation_minimises_loss_on_the_iso_flop_line():
    params = {"E": 1.8, "A": 480.0, "alpha": 0.35, "B": 2100.0, "beta": 0.37}
    c = 1e23
    n_opt, d_opt = scaling.compute_optimal(params, c)
    assert 6 * n_opt * d_opt == pytest.approx(c)
    n = n_opt * np.geomspace(0.5, 2, 101)
    losses = scaling.predict(scaling.LAWS["chinchilla"], params, n, c / (6 * n))
    assert losses.argmin() == 50


# --- inputs ---------------------------------------------------------------------------------


def test_frontier_keeps_the_best_loss_at_each_compute_level():
    p = [scaling.Point("g", 3.0, compute=1.0, level="c1"), scaling.Point("g", 2.9, compute=1.01, level="c1"),
         scaling.Point("g", 2.5, compute=2.0), scaling.Point("g", 2.6, compute=2.0),
         scaling.Point("g", 2.0, compute=4.0)]
    kept, beaten = scaling.frontier(p)
    assert [q.loss for q in kept] == [2.9, 2.5, 2.0]
    assert sorted(q.loss for q in beaten) == [2.6, 3.0]


def test_off_frontier_points_are_kept_apart_in_the_fit(tmp_path):
    rows = [("g", c, 1 + c ** -0.5) for c in (0.1, 0.2, 0.4, 0.8)] + [("g", 0.2, 5.0)]
    result = fit_points(scaling.read_inputs([write_csv(tmp_path / "t.csv", rows)]).points, bootstrap=0)
    assert len(result["groups"]["g"]["points"]) == 4
    assert [p["loss"] for p in result["groups"]["g"]["excluded"]] == [5.0]


def test_csv_jsonl_and_run_directories_give_the_same_points(tmp_path):
    rows = [("gpt", 0.01 * 2 ** i, 3.0 - 0.1 * i) for i in range(4)]
    from_csv = scaling.read_inputs([write_csv(tmp_path / "t.csv", rows)])
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"group": g, "compute": c, "loss": l}) + "\n\n"
                                              for g, c, l in rows))
    from_jsonl = scaling.read_inputs([tmp_path / "t.jsonl"])
    runs = [write_run(tmp_path / f"run{i}", compute=c, bpb=l, compute_class=f"c{i}")
            for i, (_, c, l) in enumerate(rows)]
    from_runs = scaling.read_inputs(runs)
    triples = [(p.group, p.compute, p.loss) for p in from_csv.points]
    assert triples == rows
    assert [(p.group, p.compute, p.loss) for p in from_jsonl.points] == triples
    assert [(p.group, p.compute, p.loss) for p in from_runs.points] == triples
    assert from_runs.compute_unit == "reference-hours (local)" and from_runs.loss_name == "test bits per byte"
    assert from_runs.points[0].params == 1_000_000 and from_runs.points[0].tokens == 500_000
    by_config = scaling.read_inputs(runs[:1], group_by="config", metric="token_loss").points[0]
    assert by_config.group == "gpt/nano" and by_config.loss == pytest.approx(3.0)


def test_a_run_that_paid_for_its_data_selection_counts_that_compute(tmp_path):
    run = write_run(tmp_path / "charged", compute=0.75)
    result = json.loads((run / "result.json").read_text())
    result["budget_charge"] = {"hours": 0.25, "reference": "local", "charged": 0.25}
    (run / "result.json").write_text(json.dumps(result))
    assert scaling.read_inputs([run]).points[0].compute == 1.0


def test_fit_command_writes_the_documented_shape(tmp_path):
    compute = np.geomspace(0.01, 1, 6)
    rows = [(g, c, E + A * c ** -a) for g, E, A, a in (("gpt", 1.0, 2.0, 0.3), ("qlstm", 1.0, 3.0, 0.5))
            for c in compute]
    out = tmp_path / "fit.json"
    result = CliRunner().invoke(main, ["fit", str(write_csv(tmp_path / "t.csv", rows)), "--law", "power",
                                       "--bootstrap", "100", "--extrapolate", "10,100", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    fit = json.loads(out.read_text())
    assert json.loads(result.output) == fit
    assert fit["law"] == "power" and set(fit["groups"]) == {"gpt", "qlstm"}
    g = fit["groups"]["gpt"]
    assert set(g["params"]) == set(g["intervals"]) == {"E", "A", "alpha"}
    assert [p["compute"] for p in g["predictions"]] == [10.0, 100.0]
    assert set(fit["intersections"][0]) >= {"groups", "compute", "interval", "fraction_crossing"}
    assert set(fit["versions"]) >= {"languini", "numpy", "scipy", "python"}
    prose = CliRunner().invoke(main, ["fit", str(tmp_path / "t.csv"), "--law", "power", "--bootstrap", "0",
                                      "--out", str(out)])
    assert "| gpt | 6 |" in prose.output and "cross at" in prose.output


# --- bad input ------------------------------------------------------------------------------


def _bad_inputs(tmp_path):
    """(case, argv, expected words) for each mistake a user can make."""
    levels = [("g", c, 2.0 + 1 / c) for c in (0.1, 0.2, 0.4)]
    run_nan = write_run(tmp_path / "nan-run", bpb=float("nan"))
    return [
        ("fewer points than parameters", [write_csv(tmp_path / "two.csv", levels[:2]), "--law", "power"],
         "fewer than the 3 free parameters"),
        ("fewer points than chinchilla's", [write_csv(tmp_path / "n.csv", [("g", n, n, 3.0) for n in (1e6, 2e6)],
                                                      ("group", "params", "tokens", "loss")), "--law", "chinchilla"],
         "fewer than the 5 free parameters"),
        ("non-positive loss", [write_csv(tmp_path / "zero.csv", [*levels, ("g", 0.8, 0.0)]), "--law", "power"],
         "loss must be positive"),
        ("non-positive compute", [write_csv(tmp_path / "neg.csv", [*levels, ("g", -1, 2.0)]), "--law", "power"],
         "compute must be positive"),
        ("one compute level", [write_csv(tmp_path / "one.csv", [("g", 0.1, 3.0), ("g", 0.1, 2.9), ("g", 0.1, 2.8)]),
                               "--law", "power"], "has 1 compute level"),
        ("NaN in a result", [run_nan, "--law", "power"], "is nan"),
        ("law needs a column", [write_csv(tmp_path / "c.csv", levels), "--law", "chinchilla"], "has no params"),
        ("not a number", [write_csv(tmp_path / "x.csv", [("g", "lots", 2.0)]), "--law", "power"], "is not a number"),
        ("no loss column", [write_csv(tmp_path / "nl.csv", [("g", 1)], ("group", "compute")), "--law", "power"],
         "no 'loss' column"),
        ("folder without result", [tmp_path / "empty-dir", "--law", "power"], "holds no result.json"),
        ("missing input", [tmp_path / "absent.csv", "--law", "power"], "not found"),
        ("unknown file type", [write_csv(tmp_path / "t.txt", levels), "--law", "power"], "give a run directory"),
        ("bad extrapolation", [tmp_path / "three.csv", "--law", "power", "--extrapolate", "-5"], "positive"),
        ("bad crossing range", [tmp_path / "three.csv", "--law", "power", "--crossing-range", "5", "1"], "LOW HIGH"),
    ]


def test_every_bad_input_is_one_sentence_and_a_nonzero_exit(tmp_path):
    (tmp_path / "empty-dir").mkdir()
    write_csv(tmp_path / "three.csv", [("g", c, 2.0 + 1 / c) for c in (0.1, 0.2, 0.4)])
    (tmp_path / "bad.jsonl").write_text('{"group": "g", "compute": 1, "loss": 2}\n{not json\n')
    cases = _bad_inputs(tmp_path) + [("malformed JSONL", [tmp_path / "bad.jsonl", "--law", "power"], "line 2")]
    for case, argv, words in cases:
        out = tmp_path / "fit.json"
        result = CliRunner().invoke(main, ["fit", *map(str, argv), "--bootstrap", "0", "--out", str(out)])
        assert result.exit_code == 2, (case, result.output, result.exception)
        assert isinstance(result.exception, SystemExit), (case, result.exception)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], (case, result.output)
        assert not out.exists(), case
