#!/usr/bin/env bash
# The README's site screenshots: GPT and qLSTM nano submitted in three small CPU classes on the
# embedded corpus, a mix comparison, `languini site` over them, and headless Chromium's
# screenshots of the index and of one entry page.
#
#   bash examples/site_demo.sh        # about 15 minutes on an idle 2-core CPU
#
# Runs and bundles that exist are reused. Writes runs/site_demo/ and site/, then
# examples/site/{index.png,entry.png}.
set -euo pipefail

cd "$(dirname "$0")/.."
LANGUINI=${LANGUINI:-.venv/bin/languini}
CLASSES=${CLASSES:-"cpu-10s cpu-30s cpu-1m"}
DATA=${DATA:-data/stdlib}
RUNS=${RUNS:-runs/site_demo}
SITE=${SITE:-site}
OUT=${OUT:-examples/site}
CHROMIUM=${CHROMIUM:-chromium}

if [ ! -f "$DATA/manifest.json" ]; then
  "$LANGUINI" data prepare builtin:stdlib --out "$DATA"
fi
mkdir -p "$RUNS/bundles" "$OUT"
for family in gpt qlstm; do
  [ -f "$RUNS/cert-$family.json" ] || "$LANGUINI" throughput --family "$family" --config nano --data "$DATA" \
    --out "$RUNS/cert-$family.json" --no-progress
  for class in $CLASSES; do
    run="$RUNS/$family-nano-$class"
    [ -f "$run/result.json" ] || "$LANGUINI" train --family "$family" --config nano --data "$DATA" --class "$class" \
      --throughput "$RUNS/cert-$family.json" --out "$run" --force --no-progress
    [ -d "$RUNS/bundles/$family-nano-$class" ] || "$LANGUINI" submit "$run" --out "$RUNS/bundles/$family-nano-$class"
  done
done
printf 'name = "natural"\nmax_epochs = 4\nweights = "natural"\n' > "$RUNS/natural.toml"
printf 'name = "prose-heavy"\nmax_epochs = 8\n[weights]\ncode = 1\nprose = 3\n' > "$RUNS/prose.toml"
"$LANGUINI" mix compare "$RUNS/natural.toml" "$RUNS/prose.toml" --family gpt --config nano --class cpu-10s \
  --data "$DATA" --out "$RUNS/compare" --no-progress
"$LANGUINI" site "$RUNS"/bundles/* --compare "$RUNS/compare" --out "$SITE" --title "languini: nano models on the standard library" \
  --extrapolate 0.1
shoot() {  # page, file, height
  "$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run --user-data-dir="$(mktemp -d)" \
    --window-size="1280,$3" --screenshot="$2" "file://$PWD/$SITE/$1" 2>/dev/null
}
shoot index.html "$OUT/index.png" 1300
shoot entries/gpt-nano-cpu-30s.html "$OUT/entry.png" 1500
# 256 colours keep the PNGs small (the pages are flat colours and text)
"${PYTHON:-.venv/bin/python}" -c "
import sys
from PIL import Image
for path in sys.argv[1:]:
    Image.open(path).convert('RGB').quantize(256).save(path, optimize=True)
" "$OUT/index.png" "$OUT/entry.png"
