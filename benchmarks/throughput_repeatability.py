"""Repeatability of the throughput certificate: five measurements, their coefficient of variation.

Two results in one compute class got the same compute only if the certificate is
repeatable; on an idle machine the CV of tokens/s should be a few percent at most.

    python benchmarks/throughput_repeatability.py [--family gpt] [--config nano] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics

from common import write_result

from languini.throughput import measure_request


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="gpt")
    ap.add_argument("--config", default="nano")
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    request = {"family": args.family, "config": args.config, "warmup": 3, "steps": args.steps,
               "model_overrides": {"vocab_size": args.vocab_size}, "train_overrides": {}}
    load = os.getloadavg()[0]
    rates = [measure_request(request)["tokens_per_second"] for _ in range(args.repeats)]
    mean = statistics.mean(rates)
    cv = statistics.stdev(rates) / mean
    print(f"{args.family}/{args.config}: " + ", ".join(f"{r:,.0f}" for r in rates) + " tokens/s")
    print(f"mean {mean:,.0f} tokens/s, coefficient of variation {100 * cv:.2f}% (load average before: {load:.2f})")
    path = write_result(f"throughput_repeatability-{args.family}-{args.config}",
                        {"family": args.family, "config": args.config, "tokens_per_second": rates,
                         "coefficient_of_variation": cv, "load_average_before": load})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
