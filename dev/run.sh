#!/usr/bin/env bash
# The main job end to end, offline: the engine over the News-T stream (../shared/datasets),
# writing assignments, labels and ClusterResult snapshots to var/run/, then a quality report.
set -euo pipefail
cd "$(dirname "$0")/.."
dev/setup.sh
DATA=${NEWS_T_DIR:-../shared/datasets/news-t}
OUT=var/run
mkdir -p "$OUT"
.venv/bin/clusterer --log-level ERROR replay \
  --vectors "$DATA/mpnet.npy" --metadata "$DATA/items.jsonl" --model all-mpnet-base-v2 \
  --assignments-out "$OUT/assignments.jsonl" --labels-out "$OUT/labels.npy" \
  --clusters-out "$OUT/clusters.jsonl"
.venv/bin/python - "$DATA/labels.npy" "$OUT/labels.npy" <<'PY'
import json, sys
import numpy as np
from benchmarks.metrics import quality
print(json.dumps({k: round(v, 4) for k, v in quality(np.load(sys.argv[1]), np.load(sys.argv[2])).items()}))
PY
echo "outputs in $OUT/"
