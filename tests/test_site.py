"""`languini site`: built from tiny real runs (two families at three Languini classes, an edited
bundle, a FLOP-class run, a mix comparison), checked as files and in headless Chromium."""

import json
import shutil
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from helpers import ANY_LOAD, fails, invoke, tiny_corpus

STEP = 2 * 128  # batch 2 × seq 128
CLASSES = ("6h", "12h", "24h")


@pytest.fixture(scope="module")
def inputs(test_classes, tmp_path_factory):
    """Runs of gpt and qlstm nano in 6h, 12h and 24h on an RTX 3090 (a hand-given device factor
    makes this CPU a very slow device, so that 6h buys 2 steps, 12h 4 and 24h 8), their
    bundles, one bundle edited after submission, and a `mix compare` of two mixes in a FLOP
    class whose two runs are entries too. The corpus is tiny and byte-tokenized: seconds."""
    from languini.data.prepare import prepare

    tmp = tmp_path_factory.mktemp("site-inputs")
    data = tmp / "data"
    prepare([str(tiny_corpus(tmp / "corpus.jsonl", n_docs=160))], data, tokenizer="bytes", domain_field="meta.set",
            split=(0.9, 0.05, 0.05), progress=False)
    entries = []
    for family in ("gpt", "qlstm"):
        cert = tmp / f"cert-{family}.json"
        invoke("throughput", "--family", family, "--config", "nano", "--data", data, "--batch-size", 2,
               "--steps", 2, "--warmup", 1, "--out", cert, "--no-progress", *ANY_LOAD)
        factor = 2 * STEP / (json.loads(cert.read_text())["tokens_per_second"] * 6 * 3600)
        for cls in CLASSES:
            run, bundle = tmp / "runs" / f"{family}-{cls}", tmp / "bundles" / f"{family}-{cls}"
            invoke("train", "--family", family, "--config", "nano", "--data", data, "--class", cls, "--throughput",
                   cert, "--device-factor", factor, "--eval-every", 2, "--out", run, "--no-progress")
            invoke("submit", run, "--out", bundle)
            entries.append(bundle)
    edited = tmp / "bundles" / "gpt-6h-edited"
    shutil.copytree(tmp / "bundles" / "gpt-6h", edited)
    result = json.loads((edited / "result.json").read_text())
    result["test"]["bits_per_byte"] = 0.5
    (edited / "result.json").write_text(json.dumps(result))
    for name, weights in (("even", "story = 1\nverse = 1"), ("verse-heavy", "story = 1\nverse = 3")):
        (tmp / f"{name}.toml").write_text(f'name = "{name}"\nmax_epochs = 100\n[weights]\n{weights}\n')
    compare = tmp / "compare"
    invoke("mix", "compare", tmp / "even.toml", tmp / "verse-heavy.toml", "--family", "gpt", "--config", "nano",
           "--class", "test-flops", "--data", data, "--out", compare, "--no-progress")
    return {"entries": [*entries, edited, compare / "even-seed0", compare / "verse-heavy-seed0"],
            "compare": compare, "tmp": tmp}


def build(inputs, out):
    return json.loads(invoke("site", *inputs["entries"], "--compare", inputs["compare"], "--out", out,
                             "--title", "Tiny leaderboard", "--bootstrap", 50, "--extrapolate", 100, "--json"))


@pytest.fixture(scope="module")
def site(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "site"
    return {"out": out, "report": build(inputs, out)}


def test_the_site_holds_what_the_leaderboard_and_fit_say(site):
    report, out = site["report"], site["out"]
    boards = {b["compute_class"]: b["entries"] for b in report["leaderboards"]}
    assert list(boards) == ["6h", "12h", "24h", "test-flops"]  # hours classes by size, then FLOP classes
    assert all(sorted(boards[c]) == [f"gpt-{c}", f"qlstm-{c}"] for c in CLASSES)
    invalid = [e for e in report["entries"] if not e["valid"]]
    assert [e["name"] for e in invalid] == ["gpt-6h-edited"]
    assert any("checksums: result.json" in p for p in invalid[0]["problems"])
    (fit,) = [s for s in report["scaling"] if s["fit"]]
    assert fit["groups"] == ["gpt", "qlstm"]
    (flops,) = [s for s in report["scaling"] if s["reference"] == "flops"]  # FLOP classes: an axis of their own
    assert not flops["fit"] and any("gpt is not fitted" in n for n in flops["notes"])  # one class: one level
    fitted = json.loads((out / fit["fit"]).read_text())
    assert {p["source"] for g in fitted["groups"].values() for p in g["points"]} <= {e["name"] for e in report["entries"]}
    for name, digest in report["files"].items():
        assert (out / name).is_file(), name
    assert json.loads((out / "site.json").read_text())["files"] == report["files"]


def test_same_inputs_give_the_same_bytes_and_no_paths_leak(inputs, site, tmp_path):
    again = build(inputs, tmp_path / "elsewhere")
    assert again["files"] == site["report"]["files"]
    for name in site["report"]["files"]:
        if name.endswith((".html", ".svg", ".css", ".js")) or name.startswith("fits/"):
            text = (site["out"] / name).read_text()
            assert str(inputs["tmp"]) not in text and str(site["out"]) not in text, name


def test_a_folder_it_did_not_write_is_refused(inputs, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert "did not write" in fails("site", inputs["entries"][0], "--out", out)
    assert (out / "notes.txt").read_text() == "keep me" and len(list(out.iterdir())) == 1
    assert "compare.json" in fails("site", inputs["entries"][0], "--compare", tmp_path, "--out", tmp_path / "s")
    assert not (tmp_path / "s").exists()


# --- in a browser ---------------------------------------------------------------------------

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra has it)")
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("headless Chromium is not installed (apt-get install chromium chromium-driver; .ci/run does)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="languini-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def css(driver, selector, root=None):
    from selenium.webdriver.common.by import By

    return (root or driver).find_elements(By.CSS_SELECTOR, selector)


def column(table, name):
    heads = [th.text.strip().rstrip("▲▼ ") for th in css(None, "thead th", table)]
    i = heads.index(name)
    # a warned entry (tiny test runs are shorter than their warm-up) carries a ⚠ after its name
    return [tr.find_elements("css selector", "td")[i].text.removesuffix(" ⚠") for tr in css(None, "tbody tr", table)]


def test_the_index_ranks_sorts_and_filters(site, browser):
    browser.get((site["out"] / "index.html").as_uri())
    tables = css(browser, "table.leaderboard")
    boards = site["report"]["leaderboards"]
    assert len(tables) == len(boards)
    for table, board in zip(tables, boards):
        assert column(table, "entry") == board["entries"]
        bpb = [float(v) for v in column(table, "test bits/byte")]
        assert bpb == sorted(bpb)
    table = tables[2]  # 24h: the qLSTM and GPT
    before = column(table, "entry")
    header = [th for th in css(browser, "thead th", table) if th.text.startswith("test bits/byte")][0]
    header.click()
    assert column(table, "entry") == before  # ascending: the ranking's own order
    header.click()
    assert column(table, "entry") == before[::-1]
    assert header.get_attribute("aria-sort") == "descending"
    family = [th for th in css(browser, "thead th", table) if th.text.startswith("family")][0]
    family.click()
    assert column(table, "family") == ["gpt", "qlstm"]
    assert "gpt-6h-edited" in css(browser, "table.invalid")[0].text
    css(browser, "#filter")[0].send_keys("qlstm")
    visible = [tr for t in tables for tr in css(browser, "tbody tr", t) if tr.is_displayed()]
    assert len(visible) == 3 and all("qlstm" in tr.text for tr in visible)
    browser.save_screenshot(str(site["out"].parent / "index.png"))
    assert (site["out"].parent / "index.png").stat().st_size > 10_000


def test_the_scaling_figure_has_a_curve_per_family_and_names_its_points(site, browser):
    from selenium.webdriver.common.action_chains import ActionChains

    browser.get((site["out"] / "index.html").as_uri())
    (fit,) = [s for s in site["report"]["scaling"] if s["fit"]]
    svg = css(browser, f"svg#fit-{fit['name']}")[0]
    curves = css(browser, "path.curve", svg)
    assert sorted(c.get_attribute("data-group") for c in curves) == fit["groups"]
    fitted = json.loads((site["out"] / fit["fit"]).read_text())["groups"]
    assert len(css(browser, "path.band", svg)) == sum("low" in g["curve"] for g in fitted.values())
    skipped = [g["bootstrap"]["skipped"] for g in fitted.values() if "skipped" in (g["bootstrap"] or {})]
    assert all(why in browser.page_source for why in skipped)  # 3 points: said why there are no bands
    points = css(browser, "g.point", svg)
    assert len(points) == 6
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", svg)
    ActionChains(browser).move_to_element(points[-1]).perform()  # the last drawn is on top of any it overlaps
    readout = css(browser, "figure .readout")[0].text
    assert readout == points[-1].get_attribute("data-label"), readout
    assert readout.split(" ")[0] in {
        f"{f}-{c}" for f in ("gpt", "qlstm") for c in CLASSES}


def test_an_entry_page_shows_curves_certificate_and_files(site, browser):
    browser.get((site["out"] / "entries" / "qlstm-12h.html").as_uri())
    assert "Every submission check passed" in css(browser, ".verdict")[0].text
    for ident in ("curve-tokens", "curve-compute"):
        svg = css(browser, f"svg#{ident}")[0]
        assert sorted(p.get_attribute("data-series") for p in css(browser, "path.series", svg)) == [
            "training loss", "validation loss"]
    steps = css(browser, "table.steps tbody tr")
    cert = json.loads((site["out"] / "entries" / "qlstm-12h" / "throughput.json").read_text())
    assert len(steps) == len(cert["step_times"])
    assert "(4 steps)" in css(browser, "section#summary")[0].text  # 12h buys twice the 6h's 2 steps
    files = css(browser, "table.files")[0].text
    assert "matches the bundle's record" in files and "differs" not in files
    browser.save_screenshot(str(site["out"].parent / "entry.png"))


def test_every_link_resolves(site, browser):
    pages = ["index.html"] + [n for n in site["report"]["files"] if n.endswith(".html") and n != "index.html"]
    checked = 0
    for page in pages:
        browser.get((site["out"] / page).as_uri())
        urls = browser.execute_script(  # an SVG link's href is an SVGAnimatedString: resolve it by hand
            "return Array.from(document.querySelectorAll('a[href], link[href], script[src]'), e => "
            "new URL(e.getAttribute('href') || e.getAttribute('src'), document.baseURI).href)")
        for url in map(urlparse, urls):
            assert url.scheme == "file", (page, url)
            assert Path(unquote(url.path)).is_file(), (page, url.path)
            checked += 1
    assert checked > 50
