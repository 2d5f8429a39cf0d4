# Sourced by the few-shot scripts: `source "$(dirname "${BASH_SOURCE[0]}")/fewshot_env.sh" ETTh2 "$@"` sets
#   here (the checkout), data (DATA_DIR/ETT/<name>.csv, DATA_DIR = $1 or ../shared/data), out ($2 or /tmp/runs/fid)
#   and py (the venv's python, this checkout's alignts on PYTHONPATH).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
data=${2:-$here/../shared/data}/ETT/$1.csv
out=${3:-/tmp/runs/fid}
py=${ALIGNTS_VENV:-${ALIGNTS_CACHE:-$HOME/.cache/alignts}/venv}/bin/python
export PYTHONPATH=$here
