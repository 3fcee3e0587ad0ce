"""`data prepare` and `data dedup` at corpus scale: time, MB/s, memory and disk against size.

The corpus is RedPajama-like and deterministic in (size, seed): JSON lines with the text in
`text` and one of five domains in `meta.redpajama_set_name` (shares like RedPajama's), each
domain with a vocabulary of its own; document lengths log-normal (median 300 words, sigma
1); 3% of the documents are near-duplicates of an earlier one (1% of its words replaced, at least one).
It is written as plain `.jsonl` files of at most 256 MB each, as corpora are shipped.

Each command runs as a subprocess through the CLI, timed in wall-clock and in CPU seconds
of all its processes (on a shared machine the CPU seconds compare two versions better: a
version running more processes gets more of a loaded machine), and a sampler reads /proc every
`--interval` seconds for the whole process tree (driver, pool workers, forkserver): peak
RSS summed over the tree (shared pages of forked workers counted once per process, so an
upper bound), peak PSS (shared pages split between their processes: the tree's real
footprint), peak anonymous memory (RssAnon: what grows with data held in Python objects),
and peak disk of everything the command writes (its output folder's parent and TMPDIR,
both private to the run). A third measurement opens each prepared dataset for mixed-stream
training (natural domain weights, 200 batches of 8 x 512 tokens), the memory of which must not
grow with the number of documents.

With `--baseline PATH`, the same commands also run from another checkout of languini (e.g.
`git archive 14d683e | tar -x -C /tmp/base`), one after the other on the same corpus, so
before and after are measured under the same load.

    python benchmarks/scale.py --sizes 0.25,1 [--workers 2] [--baseline /tmp/base] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import write_result

DOMAINS = {"RedPajamaCommonCrawl": 0.5, "RedPajamaC4": 0.2, "RedPajamaGithub": 0.1, "RedPajamaBook": 0.1, "RedPajamaArXiv": 0.1}
NEAR_DUPLICATES = 0.03
FILE_BYTES = 256 << 20
_LETTER_SHARES = np.array([12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.2, 2.4, 2.0, 2.0, 1.0, 1.5,
                           2.0, 0.8, 0.1, 0.2, 0.2, 0.1])
_LETTER_SHARES /= _LETTER_SHARES.sum()
REPO = Path(__file__).resolve().parent.parent
MIXED_STREAM = """
import sys, numpy as np
from languini.data.loader import PreparedData
try:
    from languini.data.streams import MixedStreams
except ImportError:  # a baseline from before the streams left the loader
    from languini.data.loader import MixedStreams
data = PreparedData(sys.argv[1])
if hasattr(data.manifest, "domain_tokens"):
    weights = data.manifest.domain_tokens("train")
else:  # a baseline from before the typed manifest view
    weights = {d: s["tokens"] for d, s in data.manifest["splits"]["train"]["by_domain"].items()}
streams = MixedStreams(data, "train", weights, batch_size=8, seq_len=512, seed=0)
for step in range(200):
    streams.batch(step)
"""


def generate(folder: Path, text_bytes: float, seed: int = 0) -> dict[str, Any]:
    """Write the corpus into `folder`; return its files, documents and planted pairs."""
    rng = np.random.default_rng(seed)
    names = list(DOMAINS)
    letters = np.array(list("etaoinshrdlucmfwypvbgkqjxz"))
    common = ["".join(rng.choice(letters, int(rng.integers(1, 9)), p=_LETTER_SHARES)) for _ in range(20_000)]
    vocab = {d: np.array(common[i * 2000 : i * 2000 + 12_000] + [w.capitalize() + "," for w in common[:500]]) for i, d in enumerate(names)}
    shares = np.array(list(DOMAINS.values()))
    recent: list[tuple[str, list[str]]] = []  # originals a near-duplicate may copy
    files, written, documents, planted, f, size = [], 0, 0, 0, None, 0
    while written < text_bytes:
        if f is None or size >= FILE_BYTES:
            if f:
                f.close()
            files.append(folder / f"part-{len(files):04d}.jsonl")
            f, size = open(files[-1], "w", encoding="utf-8"), 0
        if recent and rng.random() < NEAR_DUPLICATES:
            domain, words = recent[int(rng.integers(len(recent)))]
            words = list(words)
            for i in rng.choice(len(words), max(1, len(words) // 100), replace=False):
                words[i] = f"x{int(rng.integers(10**9))}"
            planted += 1
        else:
            domain = names[int(rng.choice(len(names), p=shares))]
            n = int(np.clip(rng.lognormal(np.log(300), 1.0), 20, 50_000))
            words = vocab[domain][rng.integers(0, len(vocab[domain]), n)].tolist()
            recent = (recent + [(domain, words)])[-1000:]
        text = "\n".join(" ".join(words[i : i + 60]) for i in range(0, len(words), 60))  # paragraphs
        line = json.dumps({"text": text, "meta": {"redpajama_set_name": domain}}) + "\n"
        f.write(line)
        size += len(line)
        written += len(text)
        documents += 1
    f.close()
    return {"files": [str(p) for p in files], "documents": documents, "near_duplicates": planted, "text_bytes": written,
            "file_bytes": sum(p.stat().st_size for p in files)}


def _tree(root: int) -> list[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as s:
                    ppid = int(s.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _memory(pid: int) -> tuple[int, int, int]:
    """RSS, PSS and anonymous RSS of one process, in bytes (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as s:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in s if line.split()[-1] == "kB"}
    except (OSError, ValueError):
        return 0, 0, 0
    return fields.get("Rss", 0), fields.get("Pss", 0), fields.get("Anonymous", 0)


def _disk(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        for folder, _, names in os.walk(path):
            for name in names:
                try:
                    total += os.lstat(os.path.join(folder, name)).st_blocks * 512
                except OSError:
                    pass
    return total


def measure(cmd: list[str], env: dict[str, str], disk_paths: list[Path], interval: float) -> dict[str, Any]:
    """Run `cmd`, sampling its process tree; its stdout (JSON) comes back under `output`."""
    peaks = {"rss": 0, "pss": 0, "anon": 0, "disk": 0}
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    # run from the temporary folder: `python -m`/`-c` put the working directory first on sys.path, and
    # a languini checkout there would shadow the one PYTHONPATH names
    proc = subprocess.Popen(cmd, env=env, cwd=env["TMPDIR"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            sizes = [_memory(pid) for pid in _tree(proc.pid)]
            for key, value in zip(("rss", "pss", "anon"), map(sum, zip(*sizes))):
                peaks[key] = max(peaks[key], value)
            peaks["disk"] = max(peaks["disk"], _disk(disk_paths))
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    used = resource.getrusage(resource.RUSAGE_CHILDREN)  # every process of the tree, once reaped
    cpu_s = used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu_s, 2), "peak_rss_mb": peaks["rss"] / 1e6, "peak_pss_mb": peaks["pss"] / 1e6,
            "peak_anon_mb": peaks["anon"] / 1e6, "peak_disk_mb": peaks["disk"] / 1e6, "output": out}


def run_code(code: Path, corpus: dict[str, Any], work: Path, workers: int, interval: float) -> dict[str, Any]:
    """prepare, dedup and a mixed-stream start with the languini at `code`."""
    shutil.rmtree(work, ignore_errors=True)  # what an earlier run into a --keep folder left
    tmp = work / "tmp"
    tmp.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(code), "TMPDIR": str(tmp)}
    cli = [sys.executable, "-m", "languini.cli"]
    data, deduped = work / "out" / "data", work / "out" / "dedup"
    prepare = measure([*cli, "data", "prepare", *corpus["files"], "--out", str(data), "--domain-field", "meta.redpajama_set_name",
                       "--workers", str(workers), "--no-progress", "--json"], env, [work / "out", tmp], interval)
    manifest = json.loads(prepare.pop("output"))
    prepare["output_mb"] = _disk([data]) / 1e6
    prepare["mb_per_s"] = corpus["text_bytes"] / 1e6 / prepare["wall_s"]
    prepare["peak_disk_over_output"] = prepare["peak_disk_mb"] / prepare["output_mb"]
    prepare["documents"] = sum(s["documents"] for s in manifest["splits"].values())
    dedup = measure([*cli, "data", "dedup", str(data), "--out", str(deduped), "--scope", "global", "--workers", str(workers),
                     "--no-progress", "--json"], env, [work / "out", tmp], interval)
    report = json.loads(dedup.pop("output"))
    dedup["mb_per_s"] = corpus["text_bytes"] / 1e6 / dedup["wall_s"]
    dedup["documents_removed"] = report["total"]["documents_before"] - report["total"]["documents_after"]
    mixed = measure([sys.executable, "-c", MIXED_STREAM, str(data)], env, [], interval)
    mixed.pop("output")
    shutil.rmtree(work, ignore_errors=True)
    return {"prepare": prepare, "dedup": dedup, "mixed_stream": mixed}


def slope_per_document(a: dict[str, Any], b: dict[str, Any], command: str, key: str) -> float:
    """Bytes per document by which a peak grows from size `a` to size `b`."""
    return (b[command][key] - a[command][key]) * 1e6 / (b["corpus"]["documents"] - a["corpus"]["documents"])


def growth(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each peak's slope per document from the smallest size to the largest, and between each two
    consecutive sizes (issue 17's target is dedup's anonymous memory from 1 to 4 GB)."""
    spans = [(rows[0], rows[-1])] + list(zip(rows, rows[1:])) if len(rows) > 2 else list(zip(rows, rows[1:]))
    return {f"{a['text_gb']:g} to {b['text_gb']:g} GB": {
        f"{c}_{k}_bytes_per_document": slope_per_document(a, b, c, k)
        for c in ("prepare", "dedup", "mixed_stream") for k in ("peak_anon_mb", "peak_pss_mb")} for a, b in spans}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="0.25", help="GB of text, comma-separated")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between /proc samples")
    parser.add_argument("--baseline", type=Path, default=None, help="another languini checkout to measure beside this one")
    parser.add_argument("--keep", type=Path, default=None, help="generate into (and keep) this folder; a corpus kept there is reused")
    parser.add_argument("--name", default="scale-cpu", help="results/NAME.json")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="languini-scale-"))
    codes = {"after": REPO, **({"before": args.baseline.resolve()} if args.baseline else {})}
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in codes}
    load = [os.getloadavg()[0]]
    try:
        for gb in (float(s) for s in args.sizes.split(",")):
            folder = root / f"corpus-{gb:g}gb"
            corpus = kept_corpus(folder, gb)
            for name, code in codes.items():
                result = run_code(code, corpus, root / f"work-{name}-{gb:g}", args.workers, args.interval)
                rows[name].append({"text_gb": gb, "corpus": {k: v for k, v in corpus.items() if k != "files"}, **result})
                load.append(os.getloadavg()[0])
                path = save(args.name, rows, load, args.workers)  # after every run: a long benchmark keeps what it measured
                print(name, gb, json.dumps({c: {k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}
                                            for c, r in result.items()}), flush=True)
            if not args.keep:
                shutil.rmtree(folder)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"wrote {path}")


def kept_corpus(folder: Path, gb: float) -> dict[str, Any]:
    """The corpus of `gb` GB in `folder`: generated, or read back where a `--keep` folder holds it
    (the generator is deterministic, so a kept corpus is the one it would write)."""
    record = folder / "corpus.json"
    if record.is_file():
        return json.loads(record.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    corpus = generate(folder, gb * 1e9)
    corpus["generate_s"] = round(time.perf_counter() - t, 1)
    record.write_text(json.dumps(corpus))
    return corpus


def save(name: str, rows: dict[str, list[dict[str, Any]]], load: list[float], workers: int) -> Path:
    return write_result(name, {"workers": workers, "load_average_1min": load, "sizes": rows,
                               "growth": {name: growth(r) for name, r in rows.items()},
                               "targets": {"prepare_peak_disk_over_output": 1.3, "dedup_anon_bytes_per_document_1_to_4_gb": 40}})


if __name__ == "__main__":
    main()
