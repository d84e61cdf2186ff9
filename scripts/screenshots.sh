#!/usr/bin/env bash
# Screenshots of what users look at, for the README: the pipeline graph (`kedro viz run`) and
# the MLflow views people compare runs in (`mlflow ui`), taken with Debian's headless Chromium.
#
#   make screenshots                       # or: bash scripts/screenshots.sh [PROJECT_DIR]
#
# Needs a finished `kedro run` (or `kedro run --env test`) in PROJECT_DIR (default: this
# project) whose runs are in PROJECT_DIR/mlflow.db, or MLFLOW_TRACKING_URI=http://... to read
# a running tracking server instead of starting `mlflow ui`. Chromium: `apt-get install -y
# chromium`. Both servers listen on 127.0.0.1 only; each runs in its own process group, which
# is stopped at the end (scripts/servers.sh); the script stops with an error when a port is
# already taken before it starts (a stale server) or is still taken after it stopped.
# Writes docs/pipeline_graph.png, docs/mlflow_runs.png, docs/mlflow_compare.png,
# docs/mlflow_epoch_charts.png, docs/mlflow_registry.png (palette PNGs, small).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PROJECT_DIR="$(cd "${1:-$ROOT}" && pwd)"
OUT="${OUT:-$ROOT/docs}"
BIN="${BIN:-$ROOT/.venv/bin}"
VIZ_PORT="${VIZ_PORT:-4141}"
UI_PORT="${UI_PORT:-5055}"
CHROMIUM="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
export KEDRO_DISABLE_TELEMETRY=1

die() { echo "screenshots.sh: $*" >&2; exit 1; }
[[ -x "$CHROMIUM" ]] || die "Chromium not found: apt-get update && apt-get install -y chromium"
if [[ -z "${MLFLOW_TRACKING_URI:-}" ]]; then
  [[ -f "$PROJECT_DIR/mlflow.db" ]] || die "no $PROJECT_DIR/mlflow.db: run 'kedro run' (or --env test) first"
  TRACKING_URI="sqlite:///$PROJECT_DIR/mlflow.db"
else
  TRACKING_URI="$MLFLOW_TRACKING_URI"
fi
# shellcheck source=scripts/servers.sh
source "$ROOT/scripts/servers.sh"
PORTS=("$VIZ_PORT")
[[ "$TRACKING_URI" == http* ]] || PORTS+=("$UI_PORT")
for port in "${PORTS[@]}"; do  # a server left from an earlier run would be photographed
  port_free "$port" || die "port $port on 127.0.0.1 is in use (a server from an earlier run?): stop it, or set VIZ_PORT / UI_PORT"
done
mkdir -p "$OUT"
WORK="$(mktemp -d)"
cleanup() {
  local status=$?
  stop_groups "${PORTS[@]}" || status=1
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() {  # url, seconds, log
  for _ in $(seq 1 "$2"); do
    curl -sf -o /dev/null "$1" && return 0
    sleep 1
  done
  tail -n 30 "$3" >&2
  die "no answer from $1"
}

start_group "$WORK/viz.log" bash -c 'cd "$1" && exec "$2/kedro" viz run --host 127.0.0.1 --port "$3" --no-browser' \
  _ "$PROJECT_DIR" "$BIN" "$VIZ_PORT"
if [[ "$TRACKING_URI" == http* ]]; then
  UI="$TRACKING_URI"
else
  start_group "$WORK/ui.log" "$BIN/mlflow" ui --backend-store-uri "$TRACKING_URI" \
    --host 127.0.0.1 --port "$UI_PORT" --workers 1
  UI="http://127.0.0.1:$UI_PORT"
fi
wait_for "$UI/health" 120 "$WORK/ui.log"
wait_for "http://127.0.0.1:$VIZ_PORT/" 180 "$WORK/viz.log"

# The latest study run, its nested model runs and the registered model, as UI addresses
eval "$("$BIN/python" - "$TRACKING_URI" <<'EOF'
import json, sys
from urllib.parse import quote
from mlflow import MlflowClient
client = MlflowClient(tracking_uri=sys.argv[1])
experiment = client.get_experiment_by_name("ssc_skin")
if experiment is None:
    sys.exit("screenshots.sh: no experiment 'ssc_skin' in " + sys.argv[1])
runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
children = sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id),
                  key=lambda r: r.info.run_name)
child = next((r for r in children if r.info.run_name == "binary.mobilenetv2"), children[0])
e = experiment.experiment_id
ids = json.dumps([r.info.run_id for r in children])
print(f"EXPERIMENT={e}")
print(f"PARENT={parent.info.run_id}")
print(f"CHILD={child.info.run_id}")
print(f"COMPARE='compare-runs?runs={quote(ids)}&experiments={quote(json.dumps([e]))}'")
EOF
)"

# One Chromium for every shot, driven over the DevTools protocol (scripts/screenshot.py): it
# waits for pages that keep loading and closes Kedro-Viz's feature tour and MLflow's assistant
# panel before the picture is taken.
cat >"$WORK/shots.json" <<EOF
[
 {"name": "pipeline_graph", "url": "http://127.0.0.1:$VIZ_PORT/?expandAllPipelines=false&types=nodes",
  "out": "$WORK/pipeline_graph.png", "width": 1600, "height": 1000, "wait": 12,
  "click": ["Dismiss", "css:.feature-hints__close"]},
 {"name": "mlflow_runs",
  "url": "$UI/#/experiments/$EXPERIMENT/runs?workflowType=machine_learning",
  "out": "$WORK/mlflow_runs.png", "width": 1600, "height": 800, "wait": 10,
  "click": ["Close"], "expand": "[col-id*='Run Name'] button[data-component-id*='runnamecellrenderer']",
  "expect_row": "$CHILD"},
 {"name": "mlflow_compare", "url": "$UI/#/$COMPARE", "out": "$WORK/mlflow_compare.png",
  "width": 1600, "height": 1200, "wait": 10, "click": ["Close"], "scroll_to": "Run details"},
 {"name": "mlflow_epoch_charts",
  "url": "$UI/#/experiments/$EXPERIMENT/runs/$CHILD/model-metrics?workflowType=machine_learning",
  "out": "$WORK/mlflow_epoch_charts.png", "width": 1600, "height": 900, "wait": 10,
  "click": ["Close"], "type": ["input[placeholder^='Search metric charts']", "loss"],
  "after_type": 8},
 {"name": "mlflow_registry", "url": "$UI/#/models/ssc-skin-binary?workflowType=machine_learning",
  "out": "$WORK/mlflow_registry.png", "width": 1600, "height": 700, "wait": 8,
  "click": ["Close"]}
]
EOF
CHROMIUM="$CHROMIUM" "$BIN/python" "$ROOT/scripts/screenshot.py" "$WORK/shots.json"
for name in pipeline_graph mlflow_runs mlflow_compare mlflow_epoch_charts mlflow_registry; do
  # 256-colour palette PNG: a fraction of the bytes, the same picture for a UI screenshot
  "$BIN/python" -c "import sys; from PIL import Image; Image.open(sys.argv[1]).convert('RGB').quantize(256).save(sys.argv[2], optimize=True)" \
    "$WORK/$name.png" "$OUT/$name.png"
  echo "$OUT/$name.png ($(du -k "$OUT/$name.png" | cut -f1) KB)"
done
