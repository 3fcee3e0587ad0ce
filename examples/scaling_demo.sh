#!/usr/bin/env bash
# The Languini Kitchen experiment in miniature, on a CPU: GPT and qLSTM (nano) trained at four
# compute classes on the embedded corpus, a power law L(C) = E + A·C^(−α) fitted per family
# with 1,000 bootstrap resamples, extrapolated, and the two curves' crossing looked for.
#
#   make scaling-demo                 # or: bash examples/scaling_demo.sh
#   CLASSES="cpu-30s cpu-1m cpu-2m cpu-4m cpu-8m" bash examples/scaling_demo.sh
#
# Runs that already hold a result.json are reused, so an interrupted demo resumes. Each family's
# throughput is measured once and its certificate reused for every class, so all of a family's
# budgets share one rate. About 20 minutes on a 2-core CPU (training runs slower than the
# certified rate when the machine is busy, since a budget is a number of tokens).
# Writes runs/scaling/, then examples/scaling_demo/{fit.json,table.md,figure.png}.
set -euo pipefail

cd "$(dirname "$0")/.."
LANGUINI=${LANGUINI:-.venv/bin/languini}
CLASSES=${CLASSES:-"cpu-30s cpu-1m cpu-2m cpu-4m"}
DATA=${DATA:-data/stdlib}
RUNS=${RUNS:-runs/scaling}
OUT=${OUT:-examples/scaling_demo}

if [ ! -f "$DATA/manifest.json" ]; then
  "$LANGUINI" data prepare builtin:stdlib --out "$DATA"
fi

mkdir -p "$RUNS" "$OUT"
# Both certificates first, back to back: on a shared machine the load, and so the measured
# rate, drifts over the half hour of training that follows.
for family in gpt qlstm; do
  cert="$RUNS/$family-nano-throughput.json"
  if [ ! -f "$cert" ]; then
    "$LANGUINI" throughput --family "$family" --config nano --data "$DATA" --out "$cert" --no-progress
  fi
done
for family in gpt qlstm; do
  cert="$RUNS/$family-nano-throughput.json"
  for class in $CLASSES; do
    run="$RUNS/$family-$class"
    if [ -f "$run/result.json" ]; then
      echo "reusing $run"
      continue
    fi
    echo "training $family/nano for $class -> $run"
    "$LANGUINI" train --family "$family" --config nano --data "$DATA" --class "$class" \
      --throughput "$cert" --out "$run" --force --no-progress
  done
done

runs=()
for family in gpt qlstm; do
  for class in $CLASSES; do
    runs+=("$RUNS/$family-$class")
  done
done

"$LANGUINI" fit "${runs[@]}" --law power --group-by family --bootstrap 1000 --extrapolate 1,10 \
  --out "$OUT/fit.json" | tee "$OUT/table.md"
"$LANGUINI" plot "$OUT/fit.json" --out "$OUT/figure.png"
