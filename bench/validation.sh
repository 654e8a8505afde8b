#!/usr/bin/env bash
# The documented site hold-out (docs/VALIDATION.md): train every model on the training sites, score zero-shot on
# the 40 test sites of docs/validation/test_sites.txt. Slow (about 1.5 hours on 2 CPU cores); not part of CI.
#   bash bench/validation.sh            # checkpoints already in $RUNS are kept, not retrained
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data
RUNS=${RUNS:-runs/validation}
TEST=docs/validation/test_sites.txt
mkdir -p "$RUNS"

train() {  # model feature_set seeds
  [ -f "$RUNS/$1_$2.pt" ] || tamrl -v train --model "$1" --feature-set "$2" --seeds "$3" --out "$RUNS/$1_$2.pt" \
    --data "$DATA/fluxnet2015" --modis "$DATA/modis" --exclude-sites-file "$TEST" --quiet 2>&1 | tee "$RUNS/$1_$2.log"
}

evaluate() {  # feature_set labels...
  local fs=$1; shift
  local args=()
  for m in "$@"; do args+=(--checkpoint "$RUNS/${m}_$fs.pt" --label "$m"); done
  tamrl evaluate "${args[@]}" --reference xgboost --data "$DATA/fluxnet2015" --modis "$DATA/modis" \
    --sites-file "$TEST" --out "docs/validation/$fs"
}

train xgboost modis_met 1
train ctlstm modis_met 3
train tamlstm modis_met 3
train tamrl modis_met 10
evaluate modis_met tamrl ctlstm tamlstm xgboost
train xgboost met 1
train tamrl met 3
evaluate met tamrl xgboost
