"""An entry's page: verdict, summary, config, certificate with every timed step, the budget's
arithmetic, loss curves, per-domain test results, lm-eval scores, and its files with checksums."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from languini.io import sha256_file
from languini.mix import selection_row, selection_text
from languini.run import RunResult
from languini.site.collect import Site, SiteEntry, identity
from languini.site.figures import line_figure
from languini.site.html import esc, figure, integer, layout, link, number, pairs, short, table


def _value(v: Any) -> str:
    """A config or certificate value: numbers to six digits, structures as compact JSON."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, (dict, list)):
        return f"<code>{esc(json.dumps(v, sort_keys=True))}</code>"
    return esc("–" if v is None else v)


def verdict(e: SiteEntry) -> str:
    if e.entry.rankable:
        return '<p class="verdict ok">Every submission check passed: the certificate, budget, training length and ' \
               "evaluation were recomputed from the files below.</p>"
    return ('<div class="verdict bad"><p>Not ranked, because:</p><ul>'
            + "".join(f"<li>{esc(p)}</li>" for p in e.reasons) + "</ul></div>")


def summary(e: SiteEntry, r: RunResult) -> str:
    test = r.test
    ident, dataset = identity(e)
    items = [("model", f"{esc(r.family)}/{esc(r.config)}"), ("parameters", integer(r.params)),
             ("compute class", esc(r.compute_class)),
             ("tokens trained", f"{integer(r.tokens_trained)} of a {integer(r.budget_tokens)}-token "
                                f"budget ({integer(r.steps)} steps)"),
             ("reference-hours", f"{number(r.reference_hours)} on {esc(r.reference)} "
                                 f"({esc(r.budget_mode)}, device factor {number(r.device_factor)})"),
             ("device", esc(r.device)),
             ("test bits per byte", f"{number(test.get('bits_per_byte'), '.4f')} (unigram baseline "
                                    f"{number(r.unigram_bits_per_byte, '.4f')})"),
             ("test perplexity", f"{number(test.get('token_perplexity'), '.2f')} per token, "
                                 f"{number(test.get('char_perplexity'), '.3f')} per character"),
             ("test accuracy", number(test.get("accuracy"), ".4f")),
             ("mix", esc(r.mix)), ("data selection", esc(selection_text(selection_row(r.to_dict()))))]
    if dataset:
        items.append(("dataset", esc(dataset)))
    if ident:
        items.append(("evaluation identity", f'<code title="{esc(ident)}">{esc(short(ident))}</code>'))
    items += [("warning", esc(w)) for w in r.warnings]
    return pairs(items)


def config_section(e: SiteEntry) -> str:
    cfg = e.file("config.toml")
    if cfg is None:
        return "<p>config.toml could not be read.</p>"
    items = [("family", esc(cfg.family)), ("size", esc(cfg.config_name)), ("class", esc(cfg.compute_class)),
             ("data", f"{esc(Path(cfg.data).name)} (fingerprint <code>{esc(cfg.data_fingerprint[:16])}</code>)")]
    items += [(f"model.{k}", _value(v)) for k, v in sorted(cfg.model.items())]
    items += [(f"train.{k}", _value(v)) for k, v in sorted(cfg.train.items())]
    return pairs(items)


CERTIFICATE_KEYS = ("model", "config", "config_hash", "params", "implementation", "device", "device_type", "languini",
                    "torch", "triton", "batch_size", "micro_batch_size", "seq_len", "dtype", "compile",
                    "warmup_steps", "measured_steps", "step_time_median", "step_time_p10", "step_time_p90",
                    "tokens_per_second", "tokens_per_second_p10", "tokens_per_second_p90", "flops_per_token",
                    "peak_flops", "mfu", "peak_memory_bytes", "date")


def certificate_section(e: SiteEntry) -> str:
    cert = e.file("throughput.json")
    if cert is None:
        return "<p>throughput.json could not be read.</p>"
    out = [pairs((k, _value(cert[k])) for k in CERTIFICATE_KEYS if k in cert)]
    if cert.get("sweep"):
        out.append(table(["batch size", "status", "tokens/s", "peak memory (bytes)"],
                         ([str(s.get("batch_size")), esc(s.get("status")), number(s.get("tokens_per_second"), ",.0f"),
                           integer(s.get("peak_memory_bytes"))] for s in cert["sweep"]), numeric=(0, 2, 3)))
    step_tokens = (cert.get("batch_size") or 0) * (cert.get("seq_len") or 0)
    times = cert.get("step_times") or []
    out.append(f"<h3>Every timed step ({len(times)}, after {esc(cert.get('warmup_steps', '?'))} untimed)</h3>")
    out.append(table(["step", "seconds", "tokens/s"],
                     ([str(i), number(t, ".6f"), number(step_tokens / t if t else None, ",.0f")]
                      for i, t in enumerate(times, 1)), cls="sortable steps", numeric=(0, 1, 2)))
    return "\n".join(out)


def budget_section(e: SiteEntry) -> str:
    b = e.file("budget.json")
    if b is None:
        return "<p>budget.json could not be read.</p>"
    charged = (b.get("charge") or {}).get("charged")
    step = f"{b.get('batch_size')} × {b.get('seq_len')}"
    if b.get("mode") == "flops":
        less = f" − {number(charged)}" if charged else ""
        lines = [("class", f"{number(b.get('flops'))} FLOPs" + (f", less {number(charged)} charged to its data "
                                                              "selection" if charged else "")),
                 ("tokens", f"⌊({number(b.get('flops'))}{less}) / (6 × {integer(b.get('params'))})⌋ = "
                            f"{integer(b.get('tokens'))}")]
    else:
        hours = f"({number(b.get('hours'))} − {number(charged)})" if charged else number(b.get("hours"))
        lines = [("measured", f"{number(b.get('tokens_per_second'), ',.1f')} tokens/s on {esc(b.get('device'))}"),
                 ("reference rate", f"{number(b.get('tokens_per_second'), ',.1f')} × device factor "
                                    f"{number(b.get('device_factor'))} ({esc(b.get('mode'))}) = "
                                    f"{number(b.get('reference_tokens_per_second'), ',.1f')} tokens/s"),
                 ("class", f"{number(b.get('hours'))} h on {esc(b.get('reference'))}"
                           + (f", less {number(charged)} h charged to its data selection" if charged else "")),
                 ("tokens", f"⌊{number(b.get('reference_tokens_per_second'), '.6g')} × {hours} h × 3600⌋ = {integer(b.get('tokens'))}")]
    lines += [("steps", f"{integer(b.get('tokens'))} // ({step}) = {integer(b.get('steps'))}"),
              ("trained", f"{integer(b.get('steps'))} × {step} = {integer(b.get('tokens_trained'))} tokens"
                          + (f" = {number(b['reference_hours'])} reference-hours" if b.get("reference_hours") is not None
                             else ""))]
    return pairs(lines)


def curves_section(e: SiteEntry) -> str:
    """Training and validation loss against tokens, and against reference-hours (or FLOPs in a
    FLOP class, which has no hours: FLOPs = 6 × parameters × tokens)."""
    log, b = e.file("metrics.jsonl"), e.file("budget.json")
    if not log or not b:
        return "<p>metrics.jsonl or budget.json could not be read.</p>"
    points = [m for m in log if isinstance(m, dict) and "tokens" in m and "loss" in m]
    train = [m for m in points if "split" not in m]
    val = [m for m in points if m.get("split") == "validation"]
    if b.get("mode") == "flops" or not b.get("reference_tokens_per_second"):
        params = b.get("params") or (e.result.params if e.result else 0)
        unit, scale = "training FLOPs (6·N·D)", lambda tokens: 6 * params * tokens
    else:
        rate = b["reference_tokens_per_second"]
        unit, scale = f"reference-hours ({b.get('reference')})", lambda tokens: tokens / rate / 3600
    figures = []
    for axis, f in (("tokens", lambda t: t), (unit, scale)):
        series = [{"name": "training loss", "x": [f(m["tokens"]) for m in train], "y": [m["loss"] for m in train]},
                  {"name": "validation loss", "x": [f(m["tokens"]) for m in val], "y": [m["loss"] for m in val],
                   "markers": True}]
        ident = f"curve-{'tokens' if axis == 'tokens' else 'compute'}"
        svg = line_figure(series, ident, axis, "loss (nats per token)", f"loss against {axis}")
        figures.append(figure(svg, f"Loss against {esc(axis)}: training (blue) and validation (orange), from "
                                   + link(f"{e.name}/metrics.jsonl", "metrics.jsonl") + ".",
                              "Hover over a validation point for its value."))
    return '<div class="curves">' + "\n".join(figures) + "</div>"


def domains_section(r: RunResult) -> str:
    by_domain = r.test.get("by_domain") or {}
    if not by_domain:
        return "<p>No per-domain results.</p>"
    rows = [[esc(d), number(m.get("bits_per_byte"), ".4f"), number(m.get("token_perplexity"), ".2f"),
             number(m.get("char_perplexity"), ".3f"), number(m.get("accuracy"), ".4f"), integer(m.get("tokens")),
             integer(m.get("bytes")), integer(m.get("chars"))] for d, m in sorted(by_domain.items())]
    return table(["domain", "bits/byte", "token perplexity", "char perplexity", "accuracy", "tokens", "bytes",
                  "characters"], rows, cls="sortable", numeric=tuple(range(1, 8)))


def lm_eval_section(e: SiteEntry) -> str:
    path = e.entry.path / "lm_eval.json"
    if not path.is_file():
        return "<p>No lm-eval scores (<code>languini eval RUN --tasks …</code> adds them).</p>"
    try:
        tasks = json.loads(path.read_text()).get("tasks") or {}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return "<p>lm_eval.json could not be read.</p>"
    rows = []
    for task, r in sorted(tasks.items()):
        metrics = r.get("metrics") or {}
        for key, v in sorted(metrics.items()):
            name, _, filt = key.partition(",")
            if name.endswith("_stderr") or not isinstance(v, (int, float)):
                continue
            err = metrics.get(f"{name}_stderr,{filt}")
            rows.append([esc(task), esc(name), number(v, ".4f"), number(err, ".4f"), integer(r.get("samples"))])
    return table(["task", "metric", "value", "stderr", "documents"], rows, numeric=(2, 3, 4))


def files_section(e: SiteEntry) -> str:
    recorded = e.file("checksums.json") or {}
    if not recorded and (e.entry.path / "checksums.json").is_file():
        recorded = json.loads((e.entry.path / "checksums.json").read_text())
    rows = []
    for name in e.copied():
        path = e.entry.path / name
        digest = sha256_file(path)
        if name == "checksums.json":
            status = "the bundle's record"
        elif name in recorded:
            status = "matches the bundle's record" if recorded[name] == digest else "differs from the bundle's record"
        else:
            status = "not recorded" if recorded else "run directory: no record"
        rows.append([link(f"{e.name}/{name}", name), integer(path.stat().st_size), f"<code>{digest}</code>",
                     esc(status)])
    return table(["file", "bytes", "sha256", "checksum"], rows, cls="files", numeric=(1,))


def entry_page(site: Site, e: SiteEntry) -> str:
    r = e.result
    title = (f"{r.family}/{r.config} in {r.compute_class}: {e.name}" if r else f"?/? in ?: {e.name}")
    body = [f"<h1>{esc(title)}</h1>", verdict(e)]
    if r is not None:
        rows = [[("Summary", summary(e, r)), ("Budget", budget_section(e))],
                [("Config", config_section(e)), ("Throughput certificate", certificate_section(e))],
                [("Loss curves", curves_section(e))],
                [("Test results by domain", domains_section(r)), ("lm-eval", lm_eval_section(e))],
                [("Files and checksums", files_section(e))]]
        body += ['<div class="row">' + "".join(f'<section id="{esc(name.split()[0].lower())}"><h2>{esc(name)}</h2>\n'
                                               f"{html}</section>" for name, html in row) + "</div>" for row in rows]
    else:
        body.append(files_section(e))
    return layout(title, site.title, "\n".join(body), 1)
