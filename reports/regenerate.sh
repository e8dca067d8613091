#!/usr/bin/env bash
# Regenerate the calibrations, the validation tables and the example report from traces/.
#   bash reports/regenerate.sh            (from the repository root; about four minutes on 2 cores)
# Held-out splits are by sequence length: a calibration never sees the lengths it is validated on.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v ringsim > /dev/null || export PATH="$PWD/.venv/bin:$PATH"   # the Quick start's .venv when not activated
R=reports
T=traces/cpu-gloo
fit_and_check () {  # NAME "CALIBRATION TRACES" "VALIDATION TRACES"
  ringsim calibrate $2 -o $R/calib-cpu-gloo$1.json > /dev/null
  ringsim validate $3 --calibration $R/calib-cpu-gloo$1.json > $R/validation$1.txt
  ringsim validate $3 --calibration $R/calib-cpu-gloo$1.json --format json -o $R/validation$1.json
}
# 1. held out, interpolation: fit on T = 1024 and 4096, validate on T = 2048 and 3072
fit_and_check -T1024-T4096 "$(ls ${T}_*_T1024.json ${T}_*_T4096.json)" "$(ls ${T}_*_T2048.json ${T}_*_T3072.json)"
# 2. held out, extrapolation up: fit on T = 1024 and 2048, validate on T = 3072 and 4096
fit_and_check -T1024-T2048 "$(ls ${T}_*_T1024.json ${T}_*_T2048.json)" "$(ls ${T}_*_T3072.json ${T}_*_T4096.json)"
# 3. held out, extrapolation down: fit on T = 3072 and 4096, validate on T = 1024 and 2048
fit_and_check -T3072-T4096 "$(ls ${T}_*_T3072.json ${T}_*_T4096.json)" "$(ls ${T}_*_T1024.json ${T}_*_T2048.json)"
# 4. leave one length out: fit on the three other lengths, validate on the one left out (T = 2048
#    and 3072 interpolate from three lengths; T = 1024 and 4096 extrapolate)
for L in 1024 2048 3072 4096; do
  fit_and_check -loo-T$L "$(ls ${T}_*.json | grep -v "_T$L.json")" "$(ls ${T}_*_T$L.json)"
done
# 5. in-sample: fit on every committed run, validate every run (the calibration tests/test_validate.py checks)
fit_and_check "" "$(ls ${T}_*.json)" "$(ls ${T}_*.json)"
# 6. the markdown tables (into reports/README.md between the tables markers, and reports/tables.md)
python reports/tables.py $R/README.md \
  "interp|Held out (interpolation): calibrated on T = 1024, 4096; validated on T = 2048, 3072|$R/validation-T1024-T4096.json" \
  "up|Held out (extrapolation up): calibrated on T = 1024, 2048; validated on T = 3072, 4096|$R/validation-T1024-T2048.json" \
  "down|Held out (extrapolation down): calibrated on T = 3072, 4096; validated on T = 1024, 2048|$R/validation-T3072-T4096.json" \
  "loo2048|Leave one length out: calibrated on T = 1024, 3072, 4096; validated on T = 2048|$R/validation-loo-T2048.json" \
  "loo3072|Leave one length out: calibrated on T = 1024, 2048, 4096; validated on T = 3072|$R/validation-loo-T3072.json" \
  "loo1024|Leave one length out: calibrated on T = 2048, 3072, 4096; validated on T = 1024|$R/validation-loo-T1024.json" \
  "loo4096|Leave one length out: calibrated on T = 1024, 2048, 3072; validated on T = 4096|$R/validation-loo-T4096.json" \
  "insample|In-sample: calibrated and validated on all runs|$R/validation.json"
#    and the interpolation split, compact, into the main README
python reports/tables.py --compact README.md $R/validation-T1024-T4096.json
# 7. the example report (fwd+bwd T=4096 timelines first; plotly.js inline, opens offline)
first="${T}_w2_contiguous_causal_fwdbwd_T4096.json ${T}_w2_zigzag_causal_fwdbwd_T4096.json
       ${T}_w4_contiguous_causal_fwdbwd_T4096.json ${T}_w4_zigzag_causal_fwdbwd_T4096.json"
rest=$(ls ${T}_*.json | grep -v -e 'w[24]_contiguous_causal_fwdbwd_T4096' -e 'w[24]_zigzag_causal_fwdbwd_T4096')
ringsim report $first $rest --calibration $R/calib-cpu-gloo.json --max-gantt 4 -o $R/example-cpu-gloo.html
