#!/usr/bin/env bash
# Model-based data selection at equal compute, on a CPU: the embedded corpus's natural mix against
# perplexity pruning (Ankner et al. 2024), D4 = SemDeDup + prototypicality pruning (Tirumala et al.
# 2023) and DoReMi domain weights (Xie et al. 2023). The selection models are the harness's own
# GPT nano runs at the same class; each selection becomes a mix spec, and `languini mix compare`
# trains all four at one compute class with one throughput certificate, so one token budget.
#
#   bash examples/compare_selection.sh
#   CLASS=cpu-2m bash examples/compare_selection.sh
#
# Selections whose mix spec exists and finished comparison runs are reused, so an interrupted
# example resumes. Each selection's cost (selection_hours, in reference-hours through its own
# certificate) is in its mix spec's [selection] table; it is not charged to the training budget
# here (add --charge-selection to a select command to take it out). About 12 minutes on a
# 2-core CPU. Writes runs/selection/: the derived datasets, the mix specs, the DoReMi weight
# trajectory (doremi.trajectory.png), and compare/compare.json with the table (table.md);
# then copies the table and the two figures into examples/compare_selection/.
set -euo pipefail

cd "$(dirname "$0")/.."
LANGUINI=${LANGUINI:-.venv/bin/languini}
CLASS=${CLASS:-cpu-1m}
FAMILY=${FAMILY:-gpt}
CONFIG=${CONFIG:-nano}
DATA=${DATA:-data/stdlib}
OUT=${OUT:-runs/selection}
SHOW=${SHOW:-examples/compare_selection}
MODEL=(--family "$FAMILY" --config "$CONFIG")

if [ ! -f "$DATA/manifest.json" ]; then
  "$LANGUINI" data prepare builtin:stdlib --out "$DATA"
fi
mkdir -p "$OUT"
printf 'name = "natural"\nweights = "natural"\n' > "$OUT/natural.toml"

# Perplexity pruning: a reference trained on half the train documents scores the other half;
# the half with the lowest perplexity is kept.
if [ ! -f "$OUT/perplexity.toml" ]; then
  "$LANGUINI" data select perplexity "$DATA" --train-reference "$CLASS" "${MODEL[@]}" \
    --criterion low --keep 0.5 --out "$OUT/perplexity" --force
fi

# D4: documents embedded by that same reference model, 16 clusters, SemDeDup at cosine > 0.9999
# (a barely trained nano's mean hidden states are nearly parallel: the median document's nearest
# neighbour is at 0.9995, and ε = 1e-4 removes the near-identical codec modules), then
# prototypicality pruning down to half the documents.
if [ ! -f "$OUT/d4.toml" ]; then
  "$LANGUINI" data select d4 "$DATA" --embedder "$OUT/perplexity.runs/reference" \
    --clusters 16 --dedup-eps 0.0001 --keep 0.5 --out "$OUT/d4" --force
fi

# DoReMi: a reference on the natural mix, a group-DRO proxy of the same size, the averaged weights.
if [ ! -f "$OUT/doremi.toml" ]; then
  "$LANGUINI" data doremi "$DATA" "${MODEL[@]}" --class "$CLASS" --out "$OUT/doremi.toml" --force
fi

"$LANGUINI" mix compare "$OUT"/{natural,perplexity,d4,doremi}.toml "${MODEL[@]}" --class "$CLASS" \
  --data "$DATA" --out "$OUT/compare" --no-progress | tee "$OUT/table.md"
for spec in perplexity d4 doremi; do
  grep -E '^(selection_hours|selection_flops|charge) ' "$OUT/$spec.toml" | sed "s/^/$spec: /"
done
mkdir -p "$SHOW"
cp "$OUT/table.md" "$SHOW/table.md"
cp "$OUT/compare/compare.png" "$SHOW/compare.png"
cp "$OUT/doremi.trajectory.png" "$SHOW/doremi_trajectory.png"
echo "DoReMi weight trajectory: $OUT/doremi.trajectory.png; table and figures copied to $SHOW/"
