"""Training speed on CPU: tokens/s and the share of wall time spent waiting for data.

Target: data waiting ≤ 2% of step time. Trains GPT (and qLSTM where present) `nano` and
`micro` for a small CPU class on the embedded corpus (prepared once into a temp folder
unless --data is given) and reads the figures the trainer itself records in result.json.

    python benchmarks/train_cpu.py [--data DIR] [--class cpu-30s]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import write_result

from languini import trainer
from languini.distributed import World
from languini.plan import plan
from languini.family import BUILTIN

TARGET_WAIT = 0.02


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="prepared data (default: builtin:stdlib, prepared now)")
    ap.add_argument("--class", dest="class_name", default="cpu-30s")
    ap.add_argument("--configs", default="nano,micro")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            from languini.data.prepare import prepare

            data = Path(tmp) / "stdlib"
            prepare(["builtin:stdlib"], data, progress=False)
        rows = []
        for family in BUILTIN:
            for config in args.configs.split(","):
                try:
                    p = plan(family, config, data, args.class_name, {}, world=World(), progress=False)
                except ImportError:
                    continue
                r = trainer.train(p, Path(tmp) / f"{family}-{config}", progress=False)
                rows.append({"family": family, "config": config, "params": r["params"],
                             "certified_tokens_per_second": p.certificate["tokens_per_second"],
                             "train_tokens_per_second": r["train_tokens_per_second"],
                             "data_wait_fraction": r["data_wait_fraction"],
                             "test_bits_per_byte": r["test"]["bits_per_byte"]})
    print(f"{'model':<14} {'params':>10} {'cert tok/s':>11} {'train tok/s':>12} {'data wait':>10}  target ≤ 2%")
    for r in rows:
        ok = "ok" if r["data_wait_fraction"] <= TARGET_WAIT else "MISSED"
        print(f"{r['family'] + '/' + r['config']:<14} {r['params']:>10,} {r['certified_tokens_per_second']:>11,.0f} "
              f"{r['train_tokens_per_second']:>12,.0f} {100 * r['data_wait_fraction']:>9.2f}%  {ok}")
    path = write_result("train_cpu", {"class": args.class_name, "target_data_wait_fraction": TARGET_WAIT,
                                      "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
