#!/usr/bin/env bash
# The validation protocol of docs/VALIDATION.md, end to end (about 2 hours on 2 CPU cores; not part of CI).
#   1. cross-validation over the training sites: every decision, and the calibration of the intervals
#   2. the final units: 10 seeds trained on all training sites, predicting the 40 test sites
#   3. the FLUXCOM-X-style XGBoost baseline (and the same trees on same-day features)
#   4. the final table (tamrl evaluate: predictions.csv, scores, coverage, figures; every model against TAMLSTM
#      and XGBoost with bootstrap intervals)
#   5. the shipped default: the chosen recipe trained on every usable site, calibrated from step 1
# Finished units are kept: run it again to resume. VARIANT (default tamrl) is the variant step 1 chose.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=../shared/data
TEST=docs/validation/test_sites.txt
VARIANT=${VARIANT:-tamrl}
CONFIG=${CONFIG:-bench/recipe.toml}
export TAMRL_THREADS=1

parallel() {  # run a command as two workers, one core each
  "$@" --worker 0 --workers 2 & "$@" --worker 1 --workers 2; wait
}

parallel python bench/cv.py --config "$CONFIG" --out runs/cv --seeds 3
python bench/cv_report.py cv --runs runs/cv --out docs/validation/cv

parallel python bench/cv.py --config "$CONFIG" --final --seeds 10 --out runs/final
python bench/cv_report.py assemble --runs runs/final --cv runs/cv

for fs in modis_met_context modis_met; do
  [ -f "runs/final/xgboost_$fs.pt" ] || tamrl train --model xgboost --feature-set "$fs" --val-fraction 0.2 \
    --data "$DATA/fluxnet2015" --modis "$DATA/modis" --exclude-sites-file "$TEST" --out "runs/final/xgboost_$fs.pt" --quiet
done

tamrl evaluate --reference xgboost --data "$DATA/fluxnet2015" --modis "$DATA/modis" --sites-file "$TEST" \
  --checkpoint runs/final/tamrl.pt --label tamrl --checkpoint runs/final/z_off.pt --label z_off \
  --checkpoint runs/final/decoder.pt --label tamlstm \
  --checkpoint runs/final/xgboost_modis_met_context.pt --label xgboost \
  --checkpoint runs/final/xgboost_modis_met.pt --label xgboost_same_day \
  --checkpoint modis_met --label modis_met_v1 --checkpoint met --label met_v1 --out docs/validation/test
python bench/cv_report.py test --report docs/validation/test --against tamlstm xgboost modis_met_v1

SHIPPED=tamrl/checkpoints/modis_met_context.pt
[ -f "$SHIPPED" ] || TAMRL_THREADS= tamrl train --config "$CONFIG" --data "$DATA/fluxnet2015" \
  --modis "$DATA/modis" --out "$SHIPPED" --quiet
python bench/cv_report.py attach --checkpoint "$SHIPPED" --variant "$VARIANT" --cv runs/cv
