#!/usr/bin/env bash
# Regenerate the calibration, the validation tables and the example report from traces/.
#   bash reports/regenerate.sh            (from the repository root; about 30 s on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
R=reports
# 1. in-sample: fit on every committed run, validate every run (the committed calibration)
ringsim calibrate traces/cpu-gloo_*.json -o $R/calib-cpu-gloo.json
ringsim validate traces/cpu-gloo_*.json --calibration $R/calib-cpu-gloo.json > $R/validation-in-sample.txt
# 2. held out: fit on one sequence length, validate on the other (disjoint runs)
ringsim calibrate traces/cpu-gloo_*_T2048.json -o $R/calib-cpu-gloo-T2048.json > /dev/null
ringsim validate traces/cpu-gloo_*_T4096.json --calibration $R/calib-cpu-gloo-T2048.json > $R/validation-T2048-to-T4096.txt
ringsim calibrate traces/cpu-gloo_*_T4096.json -o $R/calib-cpu-gloo-T4096.json > /dev/null
ringsim validate traces/cpu-gloo_*_T2048.json --calibration $R/calib-cpu-gloo-T4096.json > $R/validation-T4096-to-T2048.txt
# 3. the example report (fwd+bwd T=4096 timelines first; plotly.js inline, ~5 MB, opens offline)
first="traces/cpu-gloo_w2_contiguous_causal_fwdbwd_T4096.json traces/cpu-gloo_w2_zigzag_causal_fwdbwd_T4096.json
       traces/cpu-gloo_w4_contiguous_causal_fwdbwd_T4096.json traces/cpu-gloo_w4_zigzag_causal_fwdbwd_T4096.json"
rest=$(ls traces/cpu-gloo_*.json | grep -v -e 'w[24]_contiguous_causal_fwdbwd_T4096' -e 'w[24]_zigzag_causal_fwdbwd_T4096')
ringsim report $first $rest --calibration $R/calib-cpu-gloo.json --max-gantt 4 -o $R/example-cpu-gloo.html
