#!/usr/bin/env bash
# The documented site hold-out (docs/VALIDATION.md): train every model on the training sites, score zero-shot on
# the 40 test sites of docs/validation/test_sites.txt. Slow (about 1.5 hours on 2 CPU cores); not part of CI.
#   SEEDS=10 BASELINE_SEEDS=3 bash bench/validation.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data
RUNS=${RUNS:-runs/validation}
SEEDS=${SEEDS:-10}
BASELINE_SEEDS=${BASELINE_SEEDS:-3}
TEST=docs/validation/test_sites.txt
mkdir -p "$RUNS"
common=(--data "$DATA/fluxnet2015" --modis "$DATA/modis" --exclude-sites-file "$TEST" --quiet)

train() {  # model feature_set seeds
  [ -f "$RUNS/$1_$2.pt" ] || tamrl -v train --model "$1" --feature-set "$2" --seeds "$3" \
    --out "$RUNS/$1_$2.pt" "${common[@]}" 2>&1 | grep -v "outside the MODIS" | tee "$RUNS/$1_$2.log"
}

for fs in modis_met met; do
  train xgboost "$fs" 1
  train tamrl "$fs" "$SEEDS"
  train ctlstm "$fs" "$BASELINE_SEEDS"
  train tamlstm "$fs" "$BASELINE_SEEDS"
done

for fs in modis_met met; do
  tamrl evaluate --data "$DATA/fluxnet2015" --modis "$DATA/modis" --sites-file "$TEST" \
    --checkpoint "$RUNS/tamrl_$fs.pt" --label tamrl --checkpoint "$RUNS/ctlstm_$fs.pt" --label ctlstm \
    --checkpoint "$RUNS/tamlstm_$fs.pt" --label tamlstm --checkpoint "$RUNS/xgboost_$fs.pt" --label xgboost \
    --reference xgboost --out "docs/validation/$fs"
done
