"""Time `languini data prepare` on builtin:stdlib, the embedded default corpus.

The figure is MB of UTF-8 document text per second of the whole `prepare` call (reading,
prose extraction, tokenizer training, encoding, writing); the target is 5 MB/s on 2 cores.
Each repeat prepares into a fresh temporary folder; the median repeat is the headline, the
best is printed beside it because shared machines are noisy.

    python benchmarks/prepare.py [--vocab-size 8192] [--repeats 3] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import write_result

from languini.data.prepare import prepare

TARGET_MB_PER_S = 5.0


def time_once(tokenizer: str, vocab_size: int, workers: int | None) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory(prefix="languini-bench-") as tmp:
        start = time.perf_counter()
        manifest = prepare(["builtin:stdlib"], Path(tmp) / "data", tokenizer=tokenizer, vocab_size=vocab_size, workers=workers, progress=False)
        return time.perf_counter() - start, manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", default="sentencepiece")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--name", default="prepare-cpu", help="result file name under benchmarks/results/")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]  # other work on the machine makes the figure worse
    seconds, manifests = zip(*(time_once(args.tokenizer, args.vocab_size, args.workers) for _ in range(args.repeats)))
    splits = manifests[0]["splits"].values()
    mb = sum(s["bytes"] for s in splits) / 1e6
    docs = sum(s["documents"] for s in splits)
    median = statistics.median(seconds)
    result = {
        "benchmark": "prepare builtin:stdlib",
        "tokenizer": args.tokenizer,
        "vocab_size": manifests[0]["tokenizer"]["vocab_size"],
        "workers": args.workers or os.cpu_count(),
        "input_mb": round(mb, 3),
        "documents": docs,
        "tokens": sum(s["tokens"] for s in splits),
        "seconds": [round(s, 3) for s in seconds],
        "median_seconds": round(median, 3),
        "mb_per_s": round(mb / median, 2),
        "best_mb_per_s": round(mb / min(seconds), 2),
        "docs_per_s": round(docs / median, 1),
        "target_mb_per_s": TARGET_MB_PER_S,
        "meets_target": mb / median >= TARGET_MB_PER_S,
        "load_average_before": round(load_before, 2),
    }
    path = write_result(args.name, result)
    print(f"prepare builtin:stdlib ({args.tokenizer}, vocab {result['vocab_size']}, {result['workers']} workers, {os.cpu_count()} cores)")
    print(f"  input      {mb:.2f} MB, {docs} documents, {result['tokens']} tokens")
    print(f"  time       median {median:.2f} s over {args.repeats} runs ({', '.join(f'{s:.2f}' for s in seconds)})")
    print(f"  speed      {result['mb_per_s']:.2f} MB/s (best {result['best_mb_per_s']:.2f}), {result['docs_per_s']:.0f} docs/s")
    print(f"  target     {TARGET_MB_PER_S:.1f} MB/s: {'met' if result['meets_target'] else 'NOT met'}")
    print(f"  written    {path}")


if __name__ == "__main__":
    main()
