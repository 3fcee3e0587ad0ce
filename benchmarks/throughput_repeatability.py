"""Repeatability of the throughput certificate, and how often its stability guard catches a
competing load.

Two results in one compute class got the same compute only if the certificate is
repeatable; on an idle machine the CV of tokens/s should be a few percent at most. Then the
same measurement runs beside a second process doing matrix products on every core: the guard
should call that measurement noisy (and `throughput`/`train` refuse it) rather than certify
a low rate. Every measurement here is taken with noise allowed, so its rate and its verdict
are both recorded: on the quiet machine a noisy verdict is a false alarm, under load a caught
one. Each measurement's first round is also judged by the spread of its step times alone (the
criterion on a GPU, and on a CPU before the CPU share), so both are compared on the same rounds.

    python benchmarks/throughput_repeatability.py [--family gpt] [--config nano] [--repeats 5]
        [--loaded-repeats 5] [--steps 10] [--batch-size B] [--note "what else ran on the machine"]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict

from common import write_result

from languini.throughput import Stability, measure_request

COMPETITOR = """
import numpy as np
a = np.random.default_rng(0).random((768, 768))
while True:
    a = a @ a
    a /= np.abs(a).max()
"""


def series(request: dict, repeats: int) -> list[dict]:
    rows = []
    for _ in range(repeats):
        cert = measure_request(request)
        first = cert["rounds"][0]
        rows.append({"tokens_per_second": cert["tokens_per_second"], "noisy": cert["noisy"],
                     "spread": cert["spread"], "cpu_share": cert["cpu_share"], "rounds": len(cert["rounds"]),
                     "first_round": {"spread": first["spread"], "cpu_share": first["cpu_share"]},
                     "noisy_by_spread_alone": first["spread"] > SPREAD_ONLY.tolerance,
                     "load_average": cert["load"]["cpu_load_average"][0]})
        r = rows[-1]
        print(f"  {r['tokens_per_second']:,.0f} tokens/s, CPU share {r['cpu_share']:.0%}, spread {r['spread']:.1%} "
              f"after {r['rounds']} round(s){', noisy' if r['noisy'] else ''}", flush=True)
    return rows


SPREAD_ONLY = Stability()
"""The spread criterion alone (what a GPU uses), applied to each measurement's first round, so
the CPU-share criterion and the spread are compared on the same rounds."""


def summary(rows: list[dict]) -> dict:
    rates = [r["tokens_per_second"] for r in rows]
    mean = statistics.mean(rates)
    return {"mean_tokens_per_second": mean,
            "coefficient_of_variation": statistics.stdev(rates) / mean if len(rates) > 1 else 0.0,
            "noisy_fraction": sum(r["noisy"] for r in rows) / len(rows),
            "first_round_cpu_share": [r["first_round"]["cpu_share"] for r in rows],
            "first_round_spread": [r["first_round"]["spread"] for r in rows],
            "noisy_by_spread_alone_fraction": sum(r["noisy_by_spread_alone"] for r in rows) / len(rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="gpt")
    ap.add_argument("--config", default="nano")
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--loaded-repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=None, help="Default: the size's.")
    ap.add_argument("--note", default="", help="What else ran on the machine (recorded with the results).")
    args = ap.parse_args()
    stability = Stability(allow_noisy=True)
    request = {"family": args.family, "config": args.config, "warmup": 3, "steps": args.steps,
               "stability": asdict(stability), "model_overrides": {"vocab_size": args.vocab_size},
               "train_overrides": {"batch_size": args.batch_size} if args.batch_size else {}}
    load = os.getloadavg()[0]
    quiet = series(request, args.repeats)
    competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR])
    try:
        time.sleep(2)  # let it reach full speed
        loaded = series(request, args.loaded_repeats)
    finally:
        competitor.kill()
        competitor.wait()
    q, l = summary(quiet), summary(loaded)
    print(f"{args.family}/{args.config} without a competing load: "
          + ", ".join(f"{r['tokens_per_second']:,.0f}" for r in quiet) + " tokens/s")
    print(f"  mean {q['mean_tokens_per_second']:,.0f}, coefficient of variation "
          f"{100 * q['coefficient_of_variation']:.2f}%, called noisy {100 * q['noisy_fraction']:.0f}% "
          f"(by the spread alone: {100 * q['noisy_by_spread_alone_fraction']:.0f}%; load average before: {load:.2f})")
    print("beside a process doing matrix products: "
          + ", ".join(f"{r['tokens_per_second']:,.0f}" for r in loaded) + " tokens/s")
    print(f"  mean {l['mean_tokens_per_second']:,.0f} ({l['mean_tokens_per_second'] / q['mean_tokens_per_second']:.0%}"
          f" of the quiet rate), caught by the guard {100 * l['noisy_fraction']:.0f}% of the time (by the spread "
          f"alone: {100 * l['noisy_by_spread_alone_fraction']:.0f}%)")
    path = write_result(f"throughput_repeatability-{args.family}-{args.config}", {
        "family": args.family, "config": args.config, "batch_size": args.batch_size, "steps": args.steps,
        "stability": asdict(stability), "note": args.note,
        "load_average_before": load,
        "tokens_per_second": [r["tokens_per_second"] for r in quiet], **q, "measurements": quiet,
        "competing_load": {"what": "a second process multiplying 768×768 matrices (numpy, all cores)",
                           "measurements": loaded, **l, "caught_fraction": l["noisy_fraction"]},
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
