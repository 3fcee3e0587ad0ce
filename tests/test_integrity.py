"""Benchmark integrity: results on different test sets are never ranked or fitted together, old
bundles are identified or set apart, and a forged result is caught by the metric check and by
re-scoring its weights (`languini verify`)."""

import json
import math
import shutil

import pytest
from click.testing import CliRunner

from helpers import fails, invoke, tiny_corpus
from languini.cli import main
from languini.data.derive import compute_identity
from languini.data.identity import identify_run
from languini.data.loader import PreparedData
from languini.io import sha256_file

QUIET = "--no-progress"


def train(data, cert, out):
    return json.loads(invoke("train", "--family", "gpt", "--config", "nano", "--data", data, "--class", "test-flops",
                             "--throughput", cert, "--out", out, QUIET, "--json"))


@pytest.fixture(scope="module")
def two_sets(trained, test_classes, tmp_path_factory):
    """Two runs of one model in one class: one on the shared test data, one on another corpus."""
    tmp = tmp_path_factory.mktemp("integrity")
    other = tmp / "other"
    invoke("data", "prepare", tiny_corpus(tmp / "other.jsonl", n_docs=200, seed=1), "--out", other,
           "--vocab-size", 300, "--domain-field", "meta.set", "--split", "80/10/10", QUIET)
    runs = {"same": tmp / "run-same", "other": tmp / "run-other"}
    results = {"same": train(trained["data"], trained["cert"], runs["same"]),
               "other": train(other, trained["cert"], runs["other"])}
    bundles = {name: tmp / f"bundle-{name}" for name in runs}
    for name, run in runs.items():
        invoke("submit", run, "--out", bundles[name])
    return {"tmp": tmp, "other": other, "runs": runs, "results": results, "bundles": bundles, **trained}


def copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def edit_bundle(bundle, name, change):
    """Edit a bundled file and recompute the checksums, as a forger would."""
    path = bundle / name
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))
    sums = {p.name: sha256_file(p) for p in sorted(bundle.iterdir()) if p.name != "checksums.json"}
    (bundle / "checksums.json").write_text(json.dumps(sums))


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_the_identity_is_the_test_text_and_protocol_whatever_the_tokenizer(two_sets):
    data = PreparedData(two_sets["data"])
    identity = data.manifest["evaluation_identity"]
    assert len(identity) == 64 and int(identity, 16) >= 0
    assert compute_identity(data) == identity  # recorded at prepare time = recomputed from the text
    r = two_sets["results"]["same"]
    assert r["evaluation_identity"] == identity and r["dataset"] == two_sets["data"].name
    assert two_sets["results"]["other"]["evaluation_identity"] != identity
    # the same corpus under another tokenizer: the same test text, so the same identity
    as_bytes = two_sets["tmp"] / "bytes"
    corpus = two_sets["tmp"] / "corpus.jsonl"
    tiny_corpus(corpus)  # the shared run's corpus, written again (it is seeded)
    manifest = json.loads(invoke("data", "prepare", corpus, "--out", as_bytes, "--tokenizer", "bytes",
                                 "--domain-field", "meta.set", "--split", "80/10/10", QUIET, "--json"))
    assert manifest["evaluation_identity"] == identity and manifest["fingerprint"] != data.fingerprint
    # a deduplicated dataset copies the test split, and keeps the identity
    dedup = json.loads(invoke("data", "dedup", as_bytes, "--out", two_sets["tmp"] / "dedup", QUIET, "--json"))
    child = PreparedData(two_sets["tmp"] / "dedup").manifest
    assert child["evaluation_identity"] == identity and dedup["fingerprint"] == child["fingerprint"]


def test_two_test_sets_never_share_a_table_or_a_fit(two_sets):
    bundles, runs = two_sets["bundles"], two_sets["runs"]
    board = json.loads(invoke("leaderboard", bundles["same"], bundles["other"], "--json"))
    assert board["invalid"] == [] and board["unidentified"] == []
    groups = [g for g in board["groups"] if g["compute_class"] == "test-flops"]
    assert len(groups) == 2 and all(len(g["rows"]) == 1 for g in groups)
    assert {g["dataset"] for g in groups} == {two_sets["data"].name, two_sets["other"].name}
    assert {g["evaluation_identity"] for g in groups} == {r["evaluation_identity"] for r in two_sets["results"].values()}
    assert {g["rows"][0]["run"] for g in groups} == {"bundle-same", "bundle-other"}
    printed = invoke("leaderboard", bundles["same"], bundles["other"])
    for g in groups:
        assert f"### test-flops · {g['dataset']} (evaluation {g['evaluation_identity'][:10]})" in printed
    # the same test set: one table, ranked
    one = json.loads(invoke("leaderboard", bundles["same"], runs["same"], "--json"))["groups"]
    assert len(one) == 1 and sorted(r["run"] for r in one[0]["rows"]) == ["bundle-same", "run-same"]
    # fits: refused across test sets, naming both identities; allowed within one
    out = fails("fit", runs["same"], runs["other"], "--law", "power", "--out", two_sets["tmp"] / "fit.json")
    assert "different test sets" in out
    for r in two_sets["results"].values():
        assert r["evaluation_identity"][:10] in out
    from languini.scaling import check_one_evaluation
    check_one_evaluation([two_sets["run"], runs["same"], bundles["same"]])


def test_an_old_bundle_is_identified_from_its_data_or_listed_apart(two_sets, tmp_path):
    def make_old(r):
        r.pop("evaluation_identity")
        r.pop("dataset")
    old = copy(two_sets["bundles"]["same"], tmp_path / "old")
    edit_bundle(old, "result.json", make_old)
    edit_bundle(old, "data_manifest.json", lambda m: m.pop("evaluation_identity"))
    found = identify_run(old)
    assert found.digest == two_sets["results"]["same"]["evaluation_identity"] and found.how.startswith("recomputed")
    moved = copy(old, tmp_path / "moved")  # its data has gone from where it was prepared
    edit_bundle(moved, "result.json", lambda r: r["data"].update(path=str(tmp_path / "gone")))
    board = json.loads(invoke("leaderboard", old, moved, two_sets["bundles"]["same"], "--json"))
    assert board["invalid"] == []
    assert [sorted(r["run"] for r in g["rows"]) for g in board["groups"]] == [["bundle-same", "old"]]
    assert [(x["run"], "not here" in x["reason"]) for x in board["unidentified"]] == [("moved", True)]
    assert "unknown evaluation identity" in invoke("leaderboard", old, moved)


def test_a_forged_result_is_caught_by_the_metric_check_and_by_verify(two_sets, tmp_path):
    data = two_sets["data"]
    forged = copy(two_sets["bundles"]["same"], tmp_path / "forged")
    edit_bundle(forged, "result.json", lambda r: r["test"].update(bits_per_byte=1.5))
    board = json.loads(invoke("leaderboard", forged, "--json"))
    assert board["groups"] == [] and board["invalid"][0]["run"] == "forged"
    assert any(p.startswith("metrics: test: token_perplexity") for p in board["invalid"][0]["reasons"])

    # a careful forger lowers the one NLL sum behind every metric, overall and per domain
    def lower(r):
        for m in [r["test"], *r["test"]["by_domain"].values()]:
            m["bits_per_byte"] *= 0.9
            m["token_perplexity"] **= 0.9
            m["char_perplexity"] **= 0.9
    careful = copy(two_sets["bundles"]["same"], tmp_path / "careful")
    edit_bundle(careful, "result.json", lower)
    board = json.loads(invoke("leaderboard", careful, "--json"))
    assert board["invalid"] == [] and board["groups"][0]["rows"][0]["verified"] is False  # it passes the checks
    result = run_cli("verify", careful, "--data", data, QUIET, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert not report["passed"] and any(m.startswith("test.bits_per_byte: recorded") for m in report["mismatches"])
    assert any(m.startswith("test.by_domain.") for m in report["mismatches"])
    board = json.loads(invoke("leaderboard", careful, "--json"))
    assert board["groups"] == [] and board["invalid"][0]["reasons"][0].startswith("verify: re-scored from its weights")
    assert run_cli("verify", forged, "--data", data, QUIET).exit_code == 1


def test_verify_passes_on_an_honest_bundle_and_the_board_shows_it(two_sets, tmp_path):
    bundle = copy(two_sets["bundles"]["same"], tmp_path / "honest")
    report = json.loads(invoke("verify", bundle, "--data", two_sets["data"], QUIET, "--json"))
    assert report["passed"] and report["mismatches"] == [] and report["rtol"] == 1e-6
    assert report["recomputed"]["test"]["bits_per_byte"] == pytest.approx(
        two_sets["results"]["same"]["test"]["bits_per_byte"], rel=1e-6)
    board = json.loads(invoke("leaderboard", bundle, "--json"))
    assert board["groups"][0]["rows"][0]["verified"] is True
    assert "| yes |" in invoke("leaderboard", bundle)
    # a result edited after verification is no longer verified, and says so
    edit_bundle(bundle, "result.json", lambda r: r.update(mix="edited"))
    assert "verify: verified.json verified another result.json" in invoke("leaderboard", bundle)
    # not the run's test set: refused before anything is scored or written
    other = copy(two_sets["bundles"]["same"], tmp_path / "other-data")
    assert "is not the test set" in fails("verify", other, "--data", two_sets["other"], QUIET)
    assert not (other / "verified.json").exists()


def test_a_bundle_without_weights_verifies_with_the_run(two_sets, tmp_path):
    bundle = tmp_path / "light"
    report = json.loads(invoke("submit", two_sets["runs"]["same"], "--out", bundle, "--no-weights", "--json"))
    assert not (bundle / "weights.pt").exists() and report["weights"]["file"] is None
    assert report["weights"]["bytes"] > 0 and len(report["weights"]["sha256"]) == 64
    assert "carries no weights" in fails("verify", bundle, "--data", two_sets["data"], QUIET)
    ok = json.loads(invoke("verify", bundle, "--data", two_sets["data"], "--weights", two_sets["runs"]["same"],
                           QUIET, "--json"))
    assert ok["passed"]
    # the full bundle's weights file holds the same tensors, so it serves as well
    again = json.loads(invoke("verify", bundle, "--data", two_sets["data"], "--weights",
                              two_sets["bundles"]["same"] / "weights.pt", QUIET, "--json"))
    assert again["passed"]
    wrong = run_cli("verify", bundle, "--data", two_sets["data"], "--weights", two_sets["runs"]["other"], QUIET,
                    "--json")
    assert wrong.exit_code == 1 and json.loads(wrong.stdout)["mismatches"][0].startswith("weights:")


def test_a_missing_path_is_an_error_not_an_entry(two_sets, tmp_path):
    for args in (["leaderboard", two_sets["bundles"]["same"], tmp_path / "nowhere"],
                 ["verify", tmp_path / "nowhere", "--data", two_sets["data"]]):
        result = run_cli(*args)
        assert result.exit_code == 2 and isinstance(result.exception, (SystemExit, type(None)))
        assert "nowhere" in result.output and "Traceback" not in result.output


def test_metric_agreement_holds_for_a_real_result(two_sets):
    from languini.evaluate import implied_nll_sums

    test = two_sets["results"]["same"]["test"]
    sums = implied_nll_sums(test)
    assert all(math.isclose(v, sums["bits_per_byte"], rel_tol=1e-12) for v in sums.values())
