"""The `languini` command: parses options, calls the library, prints prose or JSON."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from languini.errors import UserError
from languini.io import to_json

if TYPE_CHECKING:
    from languini.throughput import Stability


class Group(click.Group):
    """Turns a UserError anywhere below into one sentence on stderr and exit status 2, and
    Ctrl-C or SIGTERM into one sentence and exit status 130 (the library has cleaned up)."""

    def invoke(self, ctx: click.Context) -> Any:
        from languini.interrupts import signal_name, terminate_raises

        try:
            with terminate_raises():
                return super().invoke(ctx)
        except UserError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(getattr(e, "exit_code", 2))
        except KeyboardInterrupt as e:
            click.echo(f"stopped by {signal_name(e)}; nothing half-written was left behind.", err=True)
            sys.exit(130)


def emit(as_json: bool, obj: Any, prose: str) -> None:
    """The result on stdout; its `warnings` (a result that may not mean anything) also on stderr."""
    for warning in obj.get("warnings", []) if isinstance(obj, dict) else []:
        click.echo(f"warning: {warning}", err=True)
    click.echo(to_json(obj) if as_json else prose, nl=not as_json)


def _stacked(*options: Any) -> Any:
    """One decorator applying `options` in the order given (as they appear in --help)."""
    def apply(f: Any) -> Any:
        for option in reversed(options):
            f = option(f)
        return f
    return apply


def _writable(folder: bool) -> Any:
    """A callback refusing an output path that cannot be written before any work is done
    (a measurement or a corpus's reading is not wasted on a typo)."""
    def check(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
        from languini.io import check_writable

        if value is not None:
            check_writable(value, folder)
        return value
    return check


json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def _quiet_libraries(ctx: click.Context, param: click.Parameter, progress: bool) -> bool:
    """--no-progress silences the bars of the libraries a command drives too (datasets'
    "Generating test split"), in this process and in the workers it starts."""
    if not progress:
        os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"  # read when datasets is imported
        if "datasets" in sys.modules:
            sys.modules["datasets"].disable_progress_bars()
    return progress


progress_option = click.option("--progress/--no-progress", default=True, show_default=True,
                               callback=_quiet_libraries, help="Progress bars on stderr.")
verify_data_option = click.option(
    "--verify-data", is_flag=True,
    help="Hash every train shard against the manifest even if this machine verified it before "
         "(by default a shard is hashed once per machine and again only when its size, mtime, ctime or inode changes).")


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="languini")
def main() -> None:
    """languini: compute-matched language-model benchmarks (the Languini Kitchen protocol).

    A compute class is hours on a reference accelerator. `throughput` measures how many tokens
    per second your model trains, the class turns that into a token budget, `train` trains
    exactly that budget and evaluates on the fixed test split.

    \b
    Quick start:
      languini data prepare builtin:stdlib --out data/stdlib
      languini train --family gpt --config nano --data data/stdlib --class cpu-2m --out runs/demo
      languini eval runs/demo
    """


_stability_flags = _stacked(
    click.option("--allow-noisy", is_flag=True,
                 help="Certify a throughput whose timing never got steady (a busy machine), marked noisy; "
                      "`submit` then fails its stability check."),
    click.option("--min-cpu-share", default=0.80, show_default=True,
                 help="On a CPU: the least share of the CPU time its threads could use that a round of timed "
                      "steps must get to certify (a competing process takes the rest)."),
    click.option("--spread-tolerance", default=0.10, show_default=True,
                 help="On a GPU: the largest spread (p90/p10 − 1) of a round's step times that certifies."),
    click.option("--max-rounds", default=5, show_default=True,
                 help="Rounds of timed steps to wait for a steady one before calling the machine busy."),
)


def stability_options(f: Any) -> Any:
    """The throughput guard's options, handed to the command as one `stability` (a Stability)."""
    @functools.wraps(f)
    def command(*args: Any, allow_noisy: bool, min_cpu_share: float, spread_tolerance: float, max_rounds: int,
                **kwargs: Any) -> Any:
        from languini.throughput import Stability

        return f(*args, stability=Stability(spread_tolerance, max_rounds, allow_noisy, min_cpu_share), **kwargs)
    return _stability_flags(command)


# --- data -------------------------------------------------------------------------------


@main.group()
def data() -> None:
    """Prepare corpora: tokenizer, splits and token shards."""


def _split_fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = [float(p) for p in text.split("/")]
    except ValueError:
        parts = []
    if len(parts) != 3 or any(p <= 0 for p in parts):
        raise UserError(f"--split takes three positive numbers like 98/1/1, got '{text}'.")
    total = sum(parts)
    return parts[0] / total, parts[1] / total, parts[2] / total


@data.command("prepare")
@click.argument("sources", nargs=-1)
@click.option("--out", required=True, type=click.Path(path_type=Path), callback=_writable(folder=True), help="Output folder.")
@click.option("--domain", "domains", multiple=True, metavar="NAME=SOURCE",
              help="A source whose documents all belong to domain NAME (repeatable).")
@click.option("--tokenizer", default="sentencepiece", show_default=True,
              help="'sentencepiece' (BPE trained on the train split), 'bytes', or a .model file.")
@click.option("--vocab-size", default=8192, show_default=True, help="SentencePiece vocabulary size.")
@click.option("--domain-field", default=None, help="Dotted JSON field holding a document's domain, "
              "e.g. meta.redpajama_set_name.")
@click.option("--split", "split_text", default="98/1/1", show_default=True,
              help="Train/validation/test shares; a document's split follows from a hash of its text.")
@click.option("--skip-bad-lines", is_flag=True, help="Skip and count malformed JSON lines instead of stopping.")
@click.option("--force", is_flag=True, help="Replace an --out folder that holds a different dataset.")
@click.option("--workers", type=int, default=None, help="Processes (default: all cores).")
@click.option("--seed", default=0, show_default=True, help="Seed of the tokenizer's training sample.")
@click.option("--sample-mb", default=2.0, show_default=True, help="Train text the SentencePiece trainer sees.")
@click.option("--shard-tokens", default=64 << 20, show_default=True, help="Tokens per shard file.")
@click.option("--executor", "executor_kind", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Run the per-shard stages in local processes or on Ray (RAY_ADDRESS, else a local instance).")
@progress_option
@json_option
def data_prepare(sources: tuple[str, ...], out: Path, domains: tuple[str, ...], tokenizer: str, vocab_size: int,
                 domain_field: str | None, split_text: str, skip_bad_lines: bool, force: bool,
                 workers: int | None, seed: int, sample_mb: float, shard_tokens: int, executor_kind: str,
                 progress: bool, as_json: bool) -> None:
    """Tokenize SOURCES into a prepared-data folder.

    \b
    SOURCE is one of:
      builtin:stdlib        this Python's standard library (domains: code, prose)
      FILE.jsonl[.gz|.zst]  one JSON document per line with a "text" field
      FILE.parquet          a "text" column
      FOLDER                a folder of .txt files, one document each
      hf:NAME               a Hugging Face dataset (or a dataset saved to disk)
    """
    from languini.data.prepare import prepare

    for d in domains:
        if "=" not in d:
            raise UserError(f"--domain takes NAME=SOURCE, got '{d}'.")
    specs = list(sources) + list(domains)
    if not specs:
        raise UserError("Name at least one source, e.g. builtin:stdlib.")
    manifest = prepare(specs, out, tokenizer=tokenizer, vocab_size=vocab_size, domain_field=domain_field,
                       split=_split_fractions(split_text), skip_bad_lines=skip_bad_lines, force=force,
                       workers=workers, progress=progress, seed=seed,
                       sample_bytes=int(sample_mb * 1e6), shard_tokens=shard_tokens, executor_kind=executor_kind)
    lines = [f"Prepared {out}  (tokenizer {manifest['tokenizer']['kind']}, "
             f"vocabulary {manifest['tokenizer']['vocab_size']}, {manifest['dtype']})"]
    for name, info in manifest["splits"].items():
        lines.append(f"  {name:<10} {info['documents']:>9,} documents {info['tokens']:>12,} tokens")
    lines.append(f"  domains: {', '.join(manifest['domains'])}")
    emit(as_json, manifest, "\n".join(lines))


@data.command("dedup")
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), callback=_writable(folder=True), default=None,
              help="The new prepared-data folder (default: DATA_DIR-dedup-SCOPE beside DATA_DIR).")
@click.option("--scope", type=click.Choice(["global", "local"]), default="global", show_default=True,
              help="global: across all domains; local: within each domain (SlimPajama's distinction).")
@click.option("--threshold", default=0.8, show_default=True, help="Jaccard similarity of word n-gram sets.")
@click.option("--ngram", default=5, show_default=True, help="Words per n-gram.")
@click.option("--num-perm", default=128, show_default=True, help="MinHash permutations.")
@click.option("--decontaminate", is_flag=True, help="Also remove train documents that near-duplicate a "
              "validation or test document.")
@click.option("--no-verify", "verify", is_flag=True, flag_value=False, default=True,
              help="Keep LSH candidates without checking their MinHash similarity.")
@click.option("--workers", type=int, default=None, help="Processes (default: all cores).")
@click.option("--seed", default=0, show_default=True, help="Seed of the MinHash permutations.")
@click.option("--executor", "executor_kind", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Run the per-shard stages in local processes or on Ray (RAY_ADDRESS, else a local instance).")
@click.option("--memory-limit", default=None, metavar="SIZE",
              help="Buffers of all workers together, e.g. 512M or 8G (default: a quarter of the RAM). Bounds sorting "
                   "and merging (a merge round holds 262,144 records at most in any case); the result does not depend on it.")
@click.option("--force", is_flag=True, help="Replace an existing --out dataset.")
@progress_option
@json_option
def data_dedup(data_dir: Path, out: Path | None, scope: str, threshold: float, ngram: int, num_perm: int,
               decontaminate: bool, verify: bool, workers: int | None, seed: int, executor_kind: str,
               memory_limit: str | None, force: bool, progress: bool, as_json: bool) -> None:
    """Remove exact and near-duplicate train documents into a new prepared-data folder.

    Validation and test are copied unchanged, so every variant is scored on the same text.
    The output's manifest names its parent and the settings; the report lists each removed
    document's source id with the id of the one it duplicates.
    """
    from languini.data.dedup import dedup, describe

    out = out or data_dir.resolve().with_name(f"{data_dir.resolve().name}-dedup-{scope}")
    report = dedup(data_dir, out, scope=scope, threshold=threshold, ngram=ngram, num_perm=num_perm,
                   decontaminate=decontaminate, verify=verify, workers=workers, progress=progress, force=force,
                   seed=seed, executor_kind=executor_kind, memory_limit=memory_limit)
    emit(as_json, report, describe(report))


@data.command("make-tasks")
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), callback=_writable(folder=True), default=None, help="Task folder (default: DATA_DIR/eval_tasks).")
@click.option("--split", type=click.Choice(["test", "validation"]), default="test", show_default=True)
@click.option("--context-words", default=32, show_default=True, help="Cloze: words of passage.")
@click.option("--continuation-words", default=8, show_default=True, help="Cloze: words of each continuation.")
@click.option("--choices", default=4, show_default=True, help="Cloze: the true continuation and distractors.")
@click.option("--max-examples", default=1000, show_default=True, help="Cloze: examples at most.")
@click.option("--seed", default=0, show_default=True)
@json_option
def data_make_tasks(data_dir: Path, out: Path | None, split: str, context_words: int, continuation_words: int,
                    choices: int, max_examples: int, seed: int, as_json: bool) -> None:
    """Write offline lm-eval tasks from a split: rolling bits-per-byte and a cloze choice.

    `languini eval RUN --tasks languini` then runs both on a run trained on this data.
    """
    from languini.eval_tasks import ClozeSettings, make_tasks

    ts = make_tasks(data_dir, out, split, ClozeSettings(context_words, continuation_words, choices, max_examples, seed))
    report = {"tasks": ts.names, "include_path": str(ts.include_path), "examples": ts.examples}
    emit(as_json, report, f"tasks {', '.join(ts.names)} written to {ts.include_path}")


# --- model-based selection -------------------------------------------------------------


@data.group("select")
def data_select() -> None:
    """Choose train documents with a small model; each selection is a dataset and a mix spec.

    \b
    perplexity  keep documents by a reference model's perplexity (Ankner et al. 2024)
    d4          SemDeDup + prototypicality pruning on embeddings (Tirumala et al. 2023)
    See also `languini data doremi` (domain weights, Xie et al. 2023). Compare the outcomes
    at equal compute with `languini mix compare OUT.toml ...`.
    """


_selection_options = _stacked(
    click.option("--out", required=True, type=click.Path(path_type=Path), callback=_writable(folder=True),
                 help="The new prepared-data folder (its mix spec goes to OUT.toml unless --mix-out)."),
    click.option("--mix-out", type=click.Path(path_type=Path), callback=_writable(folder=False), default=None,
                 help="Where to write the mix spec (default: OUT.toml beside OUT)."),
    click.option("--max-epochs", default=4.0, show_default=True, help="The mix spec's max_epochs."),
    click.option("--charge-selection", is_flag=True,
                 help="Take the selection models' compute out of the training budget of runs on this mix."),
    click.option("--seed", default=0, show_default=True),
    click.option("--device", default="auto", show_default=True),
    click.option("--force", is_flag=True, help="Replace an existing OUT, mix spec and reference runs."),
)


@data_select.command("perplexity")
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--reference", "reference_run", type=click.Path(path_type=Path), default=None,
              help="A finished run to score with (it scores every train document).")
@click.option("--train-reference", "train_reference_class", default=None, metavar="CLASS",
              help="Train a reference for this compute class on half the documents and score the other half.")
@click.option("--family", default="gpt", show_default=True, help="The reference's family (with --train-reference).")
@click.option("--config", "config_name", default="nano", show_default=True,
              help="The reference's size (with --train-reference).")
@click.option("--criterion", type=click.Choice(["low", "medium", "high"]), default="low", show_default=True,
              help="Keep the lowest perplexities, those around the median, or the highest.")
@click.option("--keep", default=0.5, show_default=True, help="Fraction of the scored documents to keep.")
@_selection_options
@stability_options
@progress_option
@json_option
def data_select_perplexity(data_dir: Path, reference_run: Path | None, train_reference_class: str | None, family: str,
                           config_name: str, criterion: str, keep: float, out: Path, mix_out: Path | None,
                           max_epochs: float, charge_selection: bool, seed: int, device: str, force: bool,
                           stability: Stability, progress: bool, as_json: bool) -> None:
    """Perplexity pruning: keep the train documents a small reference model finds low (or
    medium, or high) perplexity.

    \b
    languini data select perplexity data/stdlib --train-reference cpu-1m --criterion low \\
        --keep 0.5 --out data/stdlib-ppl
    The report (--json, and OUT/selection.json) gives the perplexity distribution and the
    token share of each domain before and after, and every removed document's id and score.
    A reference trained with --train-reference measures its throughput first, under the
    stability options.
    """
    from languini.selection.perplexity import describe, select_perplexity

    report = select_perplexity(data_dir, out, reference_run=reference_run, train_reference_class=train_reference_class,
                               family=family, config=config_name, criterion=criterion, keep=keep, seed=seed,
                               mix_out=mix_out, max_epochs=max_epochs, charge_selection=charge_selection,
                               device=device, stability=stability,
                               progress=progress, force=force)
    emit(as_json, report, describe(report))


@data_select.command("d4")
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--embedder", required=True, metavar="RUN_DIR|sentence-transformers:NAME",
              help="A finished run (mean of its last hidden states) or a locally installed sentence-transformers "
                   "model (a name in the local Hugging Face cache, or a model folder).")
@click.option("--clusters", default=16, show_default=True, help="K of the spherical k-means.")
@click.option("--dedup-eps", default=0.01, show_default=True,
              help="SemDeDup drops a document whose cosine to a kept one exceeds 1 - eps.")
@click.option("--keep", default=0.5, show_default=True,
              help="Ratio of the documents left after prototypicality pruning.")
@click.option("--batch-size", default=32, show_default=True, help="Documents per embedding pass.")
@_selection_options
@progress_option
@json_option
def data_select_d4(data_dir: Path, embedder: str, clusters: int, dedup_eps: float, keep: float, batch_size: int,
                   out: Path, mix_out: Path | None, max_epochs: float, charge_selection: bool, seed: int, device: str,
                   force: bool, progress: bool, as_json: bool) -> None:
    """D4: embed, cluster, SemDeDup within clusters, re-cluster, prune the most prototypical.

    \b
    languini data select d4 data/stdlib --embedder runs/ref --clusters 16 --dedup-eps 0.01 \\
        --keep 0.5 --out data/stdlib-d4
    The report counts what each stage removed per domain and lists every removed document
    with its stage, cluster and the similarity that removed it.
    """
    from languini.selection.d4 import describe, select_d4

    report = select_d4(data_dir, out, embedder=embedder, clusters=clusters, dedup_eps=dedup_eps, keep=keep, seed=seed,
                       mix_out=mix_out, max_epochs=max_epochs, charge_selection=charge_selection,
                       batch_size=batch_size, device=device, progress=progress, force=force)
    emit(as_json, report, describe(report))


@data.command("doremi")
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--family", default="gpt", show_default=True, help="Family of the reference and proxy models.")
@click.option("--config", "config_name", default="nano", show_default=True, help="Their size.")
@click.option("--class", "class_name", required=True, help="Compute class each of the two models trains for.")
@click.option("--out", required=True, type=click.Path(path_type=Path), callback=_writable(folder=False), help="The mix spec to write (MIX.toml).")
@click.option("--eta", default=1.0, show_default=True, help="Step size of the exponentiated-gradient update.")
@click.option("--smoothing", default=1e-3, show_default=True, help="Mixing with the uniform distribution, c.")
@click.option("--max-epochs", default=4.0, show_default=True, help="The mix spec's max_epochs.")
@click.option("--charge-selection", is_flag=True,
              help="Take the reference's and proxy's compute out of the training budget of runs on this mix.")
@click.option("--seed", default=0, show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing mix spec and its runs.")
@stability_options
@progress_option
@json_option
def data_doremi(data_dir: Path, family: str, config_name: str, class_name: str, out: Path, eta: float,
                smoothing: float, max_epochs: float, charge_selection: bool, seed: int, force: bool,
                stability: Stability, progress: bool, as_json: bool) -> None:
    """DoReMi: domain weights from a group-DRO proxy model, written as a mix spec.

    \b
    languini data doremi data/stdlib --family gpt --config nano --class cpu-1m --out doremi.toml
    A reference model trains on the natural mix; a proxy of the same size trains with group DRO
    against it (every batch holds every domain). The mix spec's [weights] are the proxy's
    domain weights averaged over its steps; the trajectory is written beside it as
    MIX.trajectory.json and MIX.trajectory.png, the runs under MIX.runs/. The reference's
    throughput is measured under the stability options; the proxy uses its certificate.
    """
    from languini.selection.doremi import describe, doremi

    report = doremi(data_dir, out, family=family, config=config_name, class_name=class_name, eta=eta,
                    smoothing=smoothing, seed=seed, max_epochs=max_epochs, charge_selection=charge_selection,
                    stability=stability, progress=progress, force=force)
    emit(as_json, report, describe(report))


# --- mixes ------------------------------------------------------------------------------


@main.group()
def mix() -> None:
    """Compare data mixes at equal compute."""


@mix.command("compare")
@click.argument("mixes", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--family", required=True, help="gpt, qlstm, or module.path:Class.")
@click.option("--config", "config_name", required=True, help="The model size every mix trains.")
@click.option("--class", "class_name", required=True, help="The compute class every mix trains for.")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=None,
              help="Prepared data for mixes whose spec names none.")
@click.option("--seeds", default=1, show_default=True, help="Runs per mix (seeds 0..S-1); the table shows mean ± spread.")
@click.option("--any-tokenizer", is_flag=True,
              help="Train mixes selected under another tokenizer than their data's anyway (with a warning).")
@click.option("--out", required=True, type=click.Path(path_type=Path), callback=_writable(folder=True),
              help="Folder for the runs, compare.json and compare.png; finished runs in it are reused.")
@stability_options
@progress_option
@json_option
def mix_compare(mixes: tuple[Path, ...], family: str, config_name: str, class_name: str, data_dir: Path | None,
                seeds: int, any_tokenizer: bool, out: Path, stability: Stability, progress: bool, as_json: bool) -> None:
    """Train one run per MIX spec (and seed) at the same token budget and compare test bits/byte.

    All runs share one throughput certificate (so one budget) and one test split (the mixes'
    data must come from one prepared dataset, e.g. its dedup or selection outputs). Writes a
    table (compare.json, printed as markdown) and a figure (compare.png) of overall and
    per-domain bits-per-byte. A mix made by a selection command shows its selection cost; with
    `charge = true` in its [selection] table that cost came out of its training budget.
    """
    from languini.compare import compare, comparison_markdown

    table = compare(list(mixes), family, config_name, class_name, out, seeds, data_dir, progress, any_tokenizer,
                    stability=stability)
    emit(as_json, table, comparison_markdown(table) + f"\ntable: {out / 'compare.json'}, figure: {out / 'compare.png'}")


# --- compute ----------------------------------------------------------------------------


@main.command("classes")
@json_option
def classes(as_json: bool) -> None:
    """List the compute classes (compute_classes/*.toml)."""
    from dataclasses import asdict

    from languini.compute import load_classes

    found = load_classes()
    lines = [f"{c.name:<10} {c.hours:>10.4g} h on {c.reference}" if c.hours else
             f"{c.name:<10} {c.flops:>10.4g} training FLOPs (tokens = FLOPs / 6N)" for c in found.values()]
    emit(as_json, [asdict(c) for c in found.values()], "\n".join(lines))


_model_options = _stacked(
    click.option("--family", required=True, help="gpt, qlstm, or module.path:Class for your own model."),
    click.option("--config", "config_name", required=True,
                 help="A size from the family's configs.toml (nano, micro, mini, small, ...) or a .toml file."),
    click.option("--batch-size", type=int, default=None, help="Global batch in sequences (default: the size's)."),
    click.option("--micro-batch-size", type=int, default=None,
                 help="Sequences per forward pass; gradients accumulate up to --batch-size."),
    click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
    click.option("--compile", "compile_", is_flag=True, help="torch.compile the model."),
    click.option("--precision", default=None,
                 help="auto, fp16, bf16 or fp32. auto: fp16 autocast with a gradient scaler on CUDA (the reference "
                      "figures' precision), fp32 elsewhere [default: auto]."),
)


def _train_overrides(**kwargs: Any) -> dict[str, Any]:
    kwargs["compile"] = kwargs.pop("compile_") or None
    return kwargs


@main.command("throughput")
@_model_options
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=None,
              help="Prepared data whose vocabulary the model will use.")
@click.option("--vocab-size", type=int, default=None, help="Vocabulary size when no --data is given.")
@click.option("--warmup", default=3, show_default=True, help="Untimed warm-up steps.")
@click.option("--steps", default=10, show_default=True, help="Timed steps (the median is reported).")
@click.option("--sweep", is_flag=True, help="Grow the batch size 1, 2, 4, ... until out of memory (each in its "
              "own process) and certify the fastest.")
@click.option("--max-batch-size", default=256, show_default=True, help="Where a sweep stops if memory does not.")
@click.option("--out", type=click.Path(path_type=Path), callback=_writable(folder=False), default=None, help="Write the certificate here.")
@stability_options
@progress_option
@json_option
def throughput_cmd(family: str, config_name: str, batch_size: int | None, micro_batch_size: int | None,
                   device: str, compile_: bool, precision: str | None, data_dir: Path | None, vocab_size: int | None,
                   warmup: int, steps: int, sweep: bool, max_batch_size: int, out: Path | None, stability: Stability,
                   progress: bool, as_json: bool) -> None:
    """Measure training tokens/s (a full step on random tokens) and write a certificate.

    The certificate records the model, its config hash, device, software versions, batch,
    dtype, compile mode, every timed step, median and p10/p90, peak memory and MFU; `train
    --throughput FILE` and `budget --throughput FILE` read the budget from it.

    Steps are timed in rounds of --steps until a round is steady: on a CPU, the measurement got
    at least --min-cpu-share of the CPU time its threads could use; on a GPU, its step times
    spread (p90/p10 − 1) by at most --spread-tolerance. If --max-rounds pass without one, the
    machine is busy and the measurement is refused (or, with --allow-noisy, certified marked
    noisy). Every round and the machine's load are recorded.
    """
    from dataclasses import asdict

    from languini import throughput
    from languini.data.loader import PreparedData
    from languini.family import load_family
    from languini.io import atomic_write_json
    from languini.throughput import load_text

    if warmup < 0 or steps < 1:
        raise UserError("--warmup must be >= 0 and --steps >= 1.")
    vocab = PreparedData(data_dir).vocab_size if data_dir else vocab_size
    request = {"family": load_family(family).name, "config": config_name, "warmup": warmup, "steps": steps,
               "stability": asdict(stability),
               "model_overrides": {"vocab_size": vocab} if vocab else {},
               "train_overrides": _train_overrides(batch_size=batch_size, micro_batch_size=micro_batch_size,
                                                   device=device, compile_=compile_, precision=precision)}
    if sweep:
        cert = throughput.sweep(request, max_batch_size, progress)
    else:
        cert = throughput.measure_request(request, progress)
    if out:
        atomic_write_json(out, cert)
    lines = [f"{family}/{config_name} on {cert['device']}: {cert['tokens_per_second']:,.0f} tokens/s "
             f"(p10 {cert['tokens_per_second_p10']:,.0f}, p90 {cert['tokens_per_second_p90']:,.0f}; "
             f"batch {cert['batch_size']} × {cert['seq_len']}, median of {steps} steps)",
             (f"CPU share {cert['cpu_share']:.0%}, " if cert.get("cpu_share") is not None else "")
             + f"spread {cert['spread']:.1%} (p90/p10) in round {len(cert['rounds'])}, {load_text(cert['load'])}"
             + ("; NOISY: certified with --allow-noisy" if cert["noisy"] else "")]
    if cert["mfu"] is not None:
        lines.append(f"MFU {100 * cert['mfu']:.1f}% of {cert['peak_flops']:.3g} FLOP/s")
    for row in cert.get("sweep", []):
        tps = f"{row['tokens_per_second']:>12,.0f} tokens/s" if row["status"] == "ok" else row["status"]
        lines.append(f"  batch {row['batch_size']:>5}: {tps}")
    if out:
        lines.append(f"certificate: {out}")
    emit(as_json, cert, "\n".join(lines))


@main.command("calibrate")
@click.option("--reference", default="rtx3090", show_default=True, help="Reference device in devices.toml.")
@click.option("--config", "config_name", default="small", show_default=True,
              help="GPT size used as the yardstick (the reference must list it).")
@click.option("--batch-size", default=16, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--compile", "compile_", is_flag=True, help="torch.compile, as the reference figure was.")
@click.option("--precision", default="auto", show_default=True,
              help="auto, fp16, bf16 or fp32: the precision of the certificates it converts (auto: fp16 on CUDA, "
                   "as the reference figures).")
@click.option("--warmup", default=3, show_default=True)
@click.option("--steps", default=10, show_default=True)
@click.option("--out", required=True, type=click.Path(path_type=Path), callback=_writable(folder=False), help="Calibration file to write.")
@stability_options
@progress_option
@json_option
def calibrate_cmd(reference: str, config_name: str, batch_size: int, device: str, compile_: bool, precision: str,
                  warmup: int, steps: int, out: Path, stability: Stability,
                  progress: bool, as_json: bool) -> None:
    """Time the yardstick here to convert this device's budgets to the reference's.

    The device factor is the reference's yardstick tokens/s (devices.toml: Languini Kitchen's
    RTX 3090 figures) divided by this device's; pass the file to `train` or `budget` with
    --calibration, and the budget is labelled `calibrated` and carries the factor's inputs.
    """
    from languini.io import atomic_write_json
    from languini.throughput import calibrate

    cal = calibrate(reference, config_name, batch_size, device, compile_, warmup, steps, progress, precision,
                    stability)
    atomic_write_json(out, cal)
    y = cal["yardstick"]
    emit(as_json, cal, f"{cal['device']}: GPT {config_name} at {y['local_tokens_per_second']:,.0f} tokens/s; "
         f"{reference} at {y['reference_tokens_per_second']:,.0f}: device factor {cal['device_factor']:.4g}\n"
         f"calibration: {out}")


calibration_options = _stacked(
    click.option("--calibration", "calibration_path", type=click.Path(path_type=Path), default=None,
                 help="A file from `languini calibrate`: converts this device's tokens/s to the reference's."),
    click.option("--device-factor", type=float, default=None,
                 help="Reference yardstick tokens/s ÷ this device's, given by hand instead of --calibration."),
)


def _calibration(path: Path | None, device_factor: float | None) -> dict[str, Any] | None:
    from languini.compute import factor_as_calibration
    from languini.io import read_json

    if path is not None and device_factor is not None:
        raise UserError("Give --calibration or --device-factor, not both.")
    if path is not None:
        cal = read_json(path, "Calibration file")
        if not isinstance(cal, dict) or "device_factor" not in cal:
            raise UserError(f"{path} is not a calibration file (no device_factor).")
        return cal
    return factor_as_calibration(device_factor)


@main.command("budget")
@click.option("--class", "class_name", required=True, help="Compute class (see `languini classes`).")
@click.option("--throughput", "cert_path", required=True, type=click.Path(path_type=Path),
              help="A certificate written by `languini throughput --out`.")
@click.option("--batch-size", type=int, default=None, help="Default: the certificate's.")
@click.option("--seq-len", type=int, default=None, help="Default: the certificate's.")
@click.option("--mix", "mix_path", type=click.Path(path_type=Path), default=None,
              help="A mix spec whose data selection is charged to the budget (charge = true).")
@calibration_options
@json_option
def budget_cmd(class_name: str, cert_path: Path, batch_size: int | None, seq_len: int | None, mix_path: Path | None,
               calibration_path: Path | None, device_factor: float | None, as_json: bool) -> None:
    """Turn a compute class and a certificate into tokens, steps and reference-hours."""
    from languini.compute import budget_from_certificate, get_class
    from languini.mix import load_mix
    from languini.throughput import read_certificate

    charge = load_mix(mix_path).charge() if mix_path else None
    b = budget_from_certificate(get_class(class_name), read_certificate(cert_path),
                                _calibration(calibration_path, device_factor), batch_size, seq_len, charge)
    emit(as_json, b.to_dict(), _budget_line(b))


def _budget_line(b: Any) -> str:
    if b.mode == "flops":
        return (f"class {b.compute_class} ({b.flops:g} FLOPs{_charged(b)}; tokens = FLOPs / (6 × {b.params:,} "
                "parameters)): "
                f"{b.tokens:,} tokens = {b.steps:,} steps of {b.batch_size}×{b.seq_len}")
    return (f"class {b.compute_class} ({b.hours:g} h on {b.reference}{_charged(b)}) at "
            f"{b.reference_tokens_per_second:,.0f} reference tokens/s: {b.tokens:,} tokens = {b.steps:,} steps of "
            f"{b.batch_size}×{b.seq_len} ({b.reference_hours:.4g} reference-hours; {b.mode}, device factor "
            f"{b.device_factor:g})")


def _charged(b: Any) -> str:
    if not b.charge:
        return ""
    unit = "FLOPs" if b.mode == "flops" else "h"
    return f", less {b.charge.charged:.4g} {unit} charged for {b.charge.source}"


# --- train and eval ---------------------------------------------------------------------


@main.command("train")
@_model_options
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=None,
              help="A folder written by `languini data prepare` (optional when the --mix names its data).")
@click.option("--class", "class_name", required=True, help="Compute class (see `languini classes`).")
@click.option("--out", required=True, type=click.Path(path_type=Path), callback=_writable(folder=True), help="The run directory to create.")
@click.option("--mix", "mix_path", type=click.Path(path_type=Path), default=None,
              help="A mix spec (TOML): domain weights, max epochs, data; see the README.")
@click.option("--any-tokenizer", is_flag=True,
              help="Train a --mix selected under another tokenizer than the data's anyway (with a warning).")
@click.option("--throughput", "cert_path", type=click.Path(path_type=Path), default=None,
              help="Use this certificate instead of measuring now.")
@calibration_options
@click.option("--lr", type=float, default=None, help="Peak learning rate (default: the size's).")
@click.option("--warmup-steps", type=int, default=None, help="Linear warm-up steps.")
@click.option("--seed", type=int, default=None, help="Seed of initialisation (default 0).")
@click.option("--eval-every", type=int, default=None, help="Steps between validations (default: ~10 per run).")
@click.option("--log-every", type=int, default=None, help="Steps between training-loss log lines (default 10).")
@click.option("--checkpoint-every", default=None,
              help="Steps (500) or minutes (10m) between checkpoints [default: 10m].")
@click.option("--resume", "resume_", is_flag=True,
              help="Continue the run in --out from its newest good checkpoint (refused if the config or data changed).")
@click.option("--force", is_flag=True, help="Replace an existing run directory (with --resume: accept changes).")
@stability_options
@verify_data_option
@progress_option
@json_option
def train_cmd(family: str, config_name: str, batch_size: int | None, micro_batch_size: int | None, device: str,
              compile_: bool, precision: str | None, data_dir: Path | None, class_name: str, out: Path, mix_path: Path | None,
              any_tokenizer: bool, cert_path: Path | None,
              calibration_path: Path | None, device_factor: float | None, lr: float | None, warmup_steps: int | None, seed: int | None,
              eval_every: int | None, log_every: int | None, checkpoint_every: str | None, resume_: bool, force: bool,
              stability: Stability, verify_data: bool, progress: bool,
              as_json: bool) -> None:
    """Measure throughput, train exactly the class's token budget, evaluate on the test split.

    Checkpoints go to OUT/checkpoints every --checkpoint-every; Ctrl-C or SIGTERM finishes the
    step, checkpoints and stops; `languini resume OUT` (or the same command with --resume)
    continues, bit for bit as if never interrupted.

    For a class in hours the budget rests on the measured tokens/s, so a busy machine's
    measurement (or a certificate marked noisy) stops training unless --allow-noisy; a FLOP
    class's budget does not depend on it, so its one round of timing never stops training.
    """
    from languini.distributed import join_world
    from languini.mix import load_mix
    from languini.plan import plan
    from languini.run import RunDir
    from languini.throughput import read_certificate
    from languini.trainer import resume, train

    if not resume_:
        RunDir.check_replaceable(out, force)  # before measuring: a refusal then costs nothing
    overrides = _train_overrides(batch_size=batch_size, micro_batch_size=micro_batch_size, device=device,
                                 compile_=compile_, precision=precision, lr=lr, warmup_steps=warmup_steps, seed=seed,
                                 eval_every=eval_every, log_every=log_every, checkpoint_every=checkpoint_every)
    if resume_:
        cert_path = cert_path or RunDir.open(out).throughput  # the budget stays the one certified
    cert = read_certificate(cert_path) if cert_path else None
    mix = load_mix(mix_path) if mix_path else None
    world = join_world()
    p = plan(family, config_name, data_dir, class_name, overrides, world=world, certificate=cert,
             calibration=_calibration(calibration_path, device_factor), mix=mix, any_tokenizer=any_tokenizer,
             stability=stability, progress=progress)
    if resume_:
        result = resume(out, world=world, new=p, force=force, progress=progress, verify_data=verify_data)
        if result is not None:
            emit(as_json, result, _summary(result, out))
        return
    if not as_json:
        click.echo(f"budget: {_budget_line(p.budget)}; measured {p.budget.tokens_per_second:,.0f} tokens/s "
                   f"on {p.budget.device}", err=True)
    result = train(p, out, force=force, progress=progress, verify_data=verify_data)
    if result is not None:  # None on the other ranks under torchrun
        emit(as_json, result, _summary(result, out))


def _compute_line(r: dict[str, Any]) -> str:
    """Reference-hours, or for a FLOP class (which has none) the training FLOPs."""
    from languini.compute import trained_compute

    amount, unit = trained_compute(r)
    if unit == "FLOPs":
        return f"  training FLOPs      {amount:.4g} (6 × parameters × tokens; a FLOP class has no hours)"
    return f"  reference-hours     {amount:.4g} on {r['reference']} ({r['budget_mode']}, device factor {r['device_factor']:g})"


def _summary(r: dict[str, Any], run: Path) -> str:
    from languini.mix import SelectionCost

    t = r["test"]
    tb = run / "tb"
    return "\n".join([
        f"{r['family']}/{r['config']}: {r['params']:,} parameters, class {r['compute_class']}",
        f"  tokens trained      {r['tokens_trained']:,} of a {r['budget_tokens']:,}-token budget ({r['steps']:,} steps)",
        _compute_line(r),
        f"  test bits-per-byte  {t['bits_per_byte']:.4f}   (unigram baseline {r['unigram_bits_per_byte']:.4f})",
        f"  test perplexity     {t['token_perplexity']:.2f} per token, {t['char_perplexity']:.3f} per character",
        *([f"  data selection      {cost.text()}"] if (cost := SelectionCost.of_run(r)) else []),
        f"  run directory       {run}",
        f"  TensorBoard logs    {tb}",
        f"  look at them with   tensorboard --logdir {tb}",
    ])


@main.command("resume")
@click.argument("run_dir", type=click.Path(path_type=Path))
@verify_data_option
@progress_option
@json_option
def resume_cmd(run_dir: Path, verify_data: bool, progress: bool, as_json: bool) -> None:
    """Continue an interrupted run from its newest good checkpoint, as it was configured.

    A checkpoint that fails its checksum is skipped (with a warning) for the previous one.
    """
    from languini.distributed import join_world
    from languini.trainer import resume

    result = resume(run_dir, world=join_world(), progress=progress, verify_data=verify_data)
    if result is not None:
        emit(as_json, result, _summary(result, run_dir))


@main.command("eval")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--split", type=click.Choice(["test", "validation"]), default="test", show_default=True)
@click.option("--batch-size", default=64, show_default=True, help="Windows per forward pass (stateless models).")
@click.option("--stride", type=int, default=None, help="GPT window stride (default: a quarter of seq_len).")
@click.option("--tasks", default=None, help="lm-eval tasks instead, comma-separated: languini_rolling, "
              "languini_cloze (see `languini data make-tasks`), languini for both, or lm-eval's own.")
@click.option("--limit", type=int, default=None, help="With --tasks: at most N documents per task.")
@click.option("--include-path", "include_paths", multiple=True, type=click.Path(path_type=Path),
              help="With --tasks: another folder of task YAMLs (repeatable).")
@click.option("--device", default="auto", show_default=True)
@progress_option
@json_option
def eval_cmd(run_dir: Path, split: str, batch_size: int, stride: int | None, tasks: str | None, limit: int | None,
             include_paths: tuple[Path, ...], device: str, progress: bool, as_json: bool) -> None:
    """Bits-per-byte and perplexities of a trained run on a whole split, or lm-eval tasks.

    Writes RUN_DIR/eval-SPLIT.json. Bits-per-byte divides the summed negative log-likelihood
    (in bits) by the UTF-8 bytes of the split's decoded text; character perplexity is what
    Languini Kitchen calls normalised perplexity. With --tasks, the scores are merged into
    RUN_DIR/lm_eval.json.
    """
    if batch_size < 1 or (stride is not None and stride < 1):
        raise UserError("--batch-size and --stride must be positive.")
    if tasks is not None:
        from languini.lm_eval_adapter import run_tasks

        names = [t.strip() for t in tasks.split(",") if t.strip()]
        results = run_tasks(run_dir, names, limit, list(include_paths), batch_size, device, stride)
        lines = [f"{task}: " + ", ".join(f"{k.split(',')[0]} {v:.4f}" for k, v in r["metrics"].items()
                                         if "," in k and "_stderr" not in k and isinstance(v, (int, float)))
                 for task, r in results["tasks"].items()]
        emit(as_json, results, "\n".join(lines) + f"\nresults: {run_dir / 'lm_eval.json'}")
        return
    from languini.distributed import join_world
    from languini.evaluate import evaluate_run
    from languini.io import atomic_write_json

    result = evaluate_run(run_dir, split, batch_size, stride, device, progress, world=join_world())
    if result is None:  # another rank than 0 under torchrun: rank 0 writes and prints
        return
    atomic_write_json(run_dir / f"eval-{split}.json", result)
    m = result[split]
    lines = [f"{split}: {m['bits_per_byte']:.4f} bits/byte, token perplexity {m['token_perplexity']:.2f}, "
             f"char perplexity {m['char_perplexity']:.3f}, accuracy {m['accuracy']:.3f} over {m['tokens']:,} tokens "
             f"({m['bytes']:,} bytes); unigram {result['unigram_bits_per_byte']:.4f} bits/byte"]
    lines += [f"  {d:<12} {v['bits_per_byte']:.4f} bits/byte over {v['bytes']:,} bytes" for d, v in m["by_domain"].items()]
    emit(as_json, result, "\n".join(lines))


@main.command("lm-eval", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                          "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def lm_eval_cmd(args: tuple[str, ...]) -> None:
    """lm-eval's own command line, with the `languini` model registered.

    \b
    languini lm-eval run --model languini --model_args run_dir=RUN --device cpu --tasks ...
    """
    from languini.lm_eval_adapter import lm_eval_main

    lm_eval_main(list(args))

# --- submissions ------------------------------------------------------------------------


@main.command("submit")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), callback=_writable(folder=True), help="The bundle folder to write.")
@click.option("--no-weights", is_flag=True, help="Leave the final weights out of the bundle; it records their "
              "sha256 and size, and `verify --weights` takes them from the run directory or a file.")
@json_option
def submit_cmd(run_dir: Path, out: Path, no_weights: bool, as_json: bool) -> None:
    """Check a finished run and write a submission bundle.

    \b
    Checks: the run finished; the certificate's rate is what its own step times give; it
    measured the config that was trained; it is not marked noisy (for a class in hours, whose
    budget rests on it); the budget recomputed from it is the one trained;
    training stopped within one step of it; the test metrics cover the whole test split; no
    metric is NaN. Every failed check is named. The bundle holds the run's config,
    certificate, budget, metrics and result, the data manifest, the final weights (weights.pt,
    and their digest in weights.json), and their checksums.
    """
    from languini.leaderboard import submit

    if out.exists():
        raise UserError(f"{out} already exists; choose a new bundle folder.")
    report = submit(run_dir, out, weights=not no_weights)
    emit(as_json, report, f"all checks passed; bundle written to {out}")


@main.command("leaderboard")
@click.argument("entries", nargs=-1, required=True, type=click.Path(path_type=Path))
@json_option
def leaderboard_cmd(entries: tuple[Path, ...], as_json: bool) -> None:
    """Tables from bundles or run directories: one per test set and compute class, best first.

    Results are ranked only against results with the same evaluation identity (the hash of the
    test split's text and the evaluation protocol); each table is headed by the dataset's name
    and the identity's first digits. Each entry is checked as `submit` checks it, and its
    bits-per-byte, token and character perplexity must follow from one NLL sum; invalid entries
    and entries whose identity cannot be found are listed apart with reasons. Entries that
    `languini verify` re-scored from their weights are marked verified.
    """
    from languini.leaderboard import leaderboard, markdown

    board = leaderboard(list(entries))
    emit(as_json, board, markdown(board))


@main.command("verify")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path),
              help="The prepared dataset to re-score on: its test text must be the run's.")
@click.option("--weights", type=click.Path(path_type=Path), default=None,
              help="The weights, where the bundle carries none: a run directory or a saved state dict.")
@click.option("--batch-size", default=64, show_default=True, help="Windows per forward pass (as in training).")
@click.option("--device", default="auto", show_default=True)
@progress_option
@json_option
def verify_cmd(bundle: Path, data_dir: Path, weights: Path | None, batch_size: int, device: str, progress: bool,
               as_json: bool) -> None:
    """Re-run a bundle's test evaluation from its weights and compare every metric.

    The model is rebuilt from the bundle's config and weights (checked against their recorded
    digest) and scored on DATA's test split, which must have the run's evaluation identity.
    Every test metric must match result.json to 1e-6 relative on CPU (1e-3 where a GPU
    evaluated). The outcome is written into the bundle as verified.json, which the leaderboard
    shows; a mismatch exits with status 1.
    """
    from languini.verify import verify

    report = verify(bundle, data_dir, weights, device, batch_size, progress)
    prose = (f"verified: every test metric of {bundle} reproduced within {report['rtol']:g} relative "
             f"({report['device']}); recorded in {bundle / 'verified.json'}" if report["passed"] else
             f"verification failed for {bundle}: " + "; ".join(report["mismatches"]) + ".")
    emit(as_json, report, prose)
    if not report["passed"]:
        sys.exit(1)


# --- scaling laws -----------------------------------------------------------------------


def _numbers(texts: tuple[str, ...], option: str) -> list[float]:
    """Values given as a repeated option or as comma-separated lists."""
    try:
        return [float(v) for text in texts for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{option} takes numbers, e.g. {option} 1000,50000.") from None


def _columns(text: str | None) -> dict[str, str]:
    """FIELD=COLUMN pairs, comma-separated."""
    pairs = [p for p in (text or "").split(",") if p.strip()]
    if any("=" not in p for p in pairs):
        raise UserError(f'--columns takes FIELD=COLUMN pairs, e.g. params="Model Size", got {text!r}.')
    return dict((k.strip(), v.strip()) for k, v in (p.split("=", 1) for p in pairs))


@main.command("fit")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--law", type=click.Choice(["power", "chinchilla"]), required=True,
              help="power: L(C) = E + A·C^(−α) on each group's frontier; "
                   "chinchilla: L(N, D) = E + A/N^α + B/D^β.")
@click.option("--group-by", type=click.Choice(["family", "mix", "config"]), default="family", show_default=True,
              help="What groups runs (CSV/JSONL rows name theirs in a `group` column).")
@click.option("--metric", type=click.Choice(["bits_per_byte", "token_loss"]), default="bits_per_byte",
              show_default=True, help="A run's loss: test bits per byte, or ln of the test token perplexity.")
@click.option("--compute-unit", default=None,
              help="What a CSV/JSONL `compute` column counts (default: reference-hours).")
@click.option("--columns", "columns_text", default=None, metavar="FIELD=COLUMN[,...]",
              help='CSV/JSONL columns named otherwise, e.g. --columns params="Model Size",compute="Training FLOP" '
                   "(tokens, if absent, are compute / (6 · params)).")
@click.option("--bootstrap", "resamples", type=int, default=1000, show_default=True,
              help="Bootstrap resamples for the 95% intervals (0: none).")
@click.option("--extrapolate", multiple=True, metavar="C[,C...]",
              help="Predict at these computes: the points' unit for power, FLOPs for chinchilla.")
@click.option("--crossing-range", nargs=2, type=float, default=None, metavar="LOW HIGH",
              help="Compute searched for crossings (default: smallest observed to 1000× the largest).")
@click.option("--seed", default=0, show_default=True, help="Seed of the bootstrap resamples.")
@click.option("--out", required=True, type=click.Path(path_type=Path), callback=_writable(folder=False), help="The fit.json to write.")
@json_option
def fit_cmd(inputs: tuple[Path, ...], law: str, group_by: str, metric: str, compute_unit: str | None,
            columns_text: str | None, resamples: int,
            extrapolate: tuple[str, ...], crossing_range: tuple[float, float] | None, seed: int, out: Path,
            as_json: bool) -> None:
    """Fit a scaling law per group, with bootstrap intervals, predictions and crossings.

    \b
    INPUTS are run directories or submission bundles (any folder with a result.json), and
    CSV/JSONL tables with columns group, compute, params, tokens, loss (those the law needs).
    """
    from languini import scaling
    from languini.io import atomic_write_json

    points = scaling.read_inputs(list(inputs), group_by, metric, compute_unit, _columns(columns_text))
    result = scaling.fit(points, law, resamples, _numbers(extrapolate, "--extrapolate"), crossing_range, seed)
    atomic_write_json(out, result)
    emit(as_json, result, f"{scaling.markdown(result)}\n\nFit written to {out}.")


@main.command("plot")
@click.argument("fit_path", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), callback=_writable(folder=False), help="FIG.png, FIG.svg or FIG.pdf.")
@json_option
def plot_cmd(fit_path: Path, out: Path, as_json: bool) -> None:
    """Draw a fit.json: loss against compute with bands and crossings (chinchilla: iso-loss contours too)."""
    from languini.plots import plot_fit

    plot_fit(fit_path, out)
    emit(as_json, {"figure": str(out)}, f"Figure written to {out}.")


# --- the static site --------------------------------------------------------------------


@main.command("site")
@click.argument("entries", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="The site folder (replaced if an earlier `languini site` wrote it).")
@click.option("--title", default="languini leaderboard", show_default=True, help="The index page's heading.")
@click.option("--compare", "compare_dirs", multiple=True, type=click.Path(path_type=Path), metavar="DIR",
              help="A `languini mix compare` output folder to show (repeatable).")
@click.option("--bootstrap", "resamples", type=int, default=1000, show_default=True,
              help="Bootstrap resamples of the scaling fits (0: no bands).")
@click.option("--extrapolate", multiple=True, metavar="C[,C...]",
              help="Also predict each fit at these reference-hours.")
@json_option
def site_cmd(entries: tuple[Path, ...], out: Path, title: str, compare_dirs: tuple[Path, ...], resamples: int,
             extrapolate: tuple[str, ...], as_json: bool) -> None:
    """Build a static leaderboard site from bundles and run directories.

    \b
    OUT/index.html   one table per evaluation and compute class (sortable, filterable),
                     invalid entries apart with their reasons, and per evaluation the
                     power-law fit of loss against reference-hours (as `languini fit`)
    OUT/entries/     a page per entry: config, certificate, budget arithmetic, loss
                     curves, per-domain and lm-eval results, files with checksums
    OUT/compare/     each --compare folder's table and bars
    Plain HTML, CSS, JavaScript and SVG: open index.html from disk or serve the folder.
    The same inputs give the same bytes; site.json lists every file with its sha256.
    """
    from languini.site import build

    report = build(list(entries), out, title, list(compare_dirs), resamples, _numbers(extrapolate, "--extrapolate"))
    valid = sum(e["valid"] for e in report["entries"])
    fits = sum(s["fit"] is not None for s in report["scaling"])
    emit(as_json, {"out": str(out), **report},
         f"Site written to {out}: {len(report['entries'])} entries ({valid} ranked), {len(report['leaderboards'])} "
         f"leaderboard(s), {fits} scaling fit(s), {len(report['comparisons'])} mix comparison(s); open "
         f"{out / 'index.html'}.")


if __name__ == "__main__":
    main()
