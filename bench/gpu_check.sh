#!/usr/bin/env bash
# One prepared GPU check for a lent GPU machine (about 10 minutes on one GPU), run from the repository root:
#
#   bench/gpu_check.sh                 # pass trt10: TensorRT 10 + cuda-python 12 (the [tensorrt] extra's pins)
#   bench/gpu_check.sh --trt11         # then pass trt11: TensorRT 11 + cuda-python 13 (needs an R580+ driver)
#   bench/gpu_check.sh --no-install    # use what is installed (a machine without network)
#   bench/gpu_check.sh --wheels DIR    # install from wheels in DIR (pip --no-index --find-links DIR)
#   bench/gpu_check.sh --self-check    # here, without a GPU: imports, commands, `pytest --collect-only -m gpu`
#
# Per pass: install the pinned stack into its own venv (system site-packages visible), `pytest -m gpu`,
# engines of the tiny MLP in fp32/fp16/bf16/int8 with their layer precisions (TensorRT's engine inspector),
# and a side-by-side TensorRT timing. The report goes to $OUT/gpu-report.md (else ./gpu-report.md), with the
# JSON pieces, JUnit XML and step logs beside it. Every step has a timeout; a failing step is recorded, not fatal.
set -u -o pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$HERE"
OUT_DIR="${OUT:-$HERE}"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then [ -x "$HERE/.venv/bin/python" ] && PY="$HERE/.venv/bin/python" || PY=python3; fi
PASSES=(trt10)
INSTALL=1
WHEELS=""
SELF_CHECK=0
PYTEST_TIMEOUT="${PYTEST_TIMEOUT:-240}"   # seconds for the whole `pytest -m gpu` of one pass

while [ $# -gt 0 ]; do
  case "$1" in
    --trt11) PASSES=(trt10 trt11) ;;
    --trt11-only) PASSES=(trt11) ;;
    --no-install) INSTALL=0 ;;
    --wheels) WHEELS="$2"; shift ;;
    --self-check) SELF_CHECK=1 ;;
    --out) OUT_DIR="$2"; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUT_DIR"

if [ "$SELF_CHECK" = 1 ]; then
  exec "$PY" bench/gpu_check.py self-check --out "$OUT_DIR"
fi

# The pins of each pass: the extras in pyproject.toml ([tensorrt]+[gpu] / [tensorrt-cu13]+[gpu-cu13]).
# onnxruntime (CPU, from [build]) and onnxruntime-gpu share one folder: the GPU build is forced in last.
pins_for() {
  case "$1" in
    trt10) echo "tensorrt-cu12>=10,<11 cuda-python>=12.6.1,<13 nvidia-ml-py>=12.535 onnxruntime-gpu>=1.19,<1.27" ;;
    trt11) echo "tensorrt-cu13>=11,<12 cuda-python>=13,<14 nvidia-ml-py>=12.535 onnxruntime-gpu>=1.27" ;;
  esac
}

driver_major() {
  nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1 | cut -d. -f1
}

step() {  # step NAME TIMEOUT CMD... : run with a timeout, log to $OUT_DIR/step-NAME.log, never abort the run
  local name="$1" limit="$2"; shift 2
  echo "== $name (timeout ${limit}s)"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$OUT_DIR/step-$name.log" 2>&1
  local rc=$?
  echo "   rc=$rc in $((SECONDS - t0)) s (log: step-$name.log)"
  tail -n 3 "$OUT_DIR/step-$name.log" | sed 's/^/   | /'
  return 0
}

install_stack() {  # install_stack PASS VENV_PYTHON [WHEELS_DIR]
  local pass="$1" vpy="$2" wheels="${3:-}"
  local pip=("$vpy" -m pip install -q --disable-pip-version-check)
  [ -n "$wheels" ] && pip+=(--no-index --find-links "$wheels")
  local pins; read -r -a pins <<<"$(pins_for "$pass")"
  "${pip[@]}" -e '.[build,serve,dev]' &&
    "${pip[@]}" "${pins[@]}" &&
    "${pip[@]}" --force-reinstall --no-deps "${pins[${#pins[@]}-1]}"
}

for pass in "${PASSES[@]}"; do
  if [ "$pass" = trt11 ]; then
    drv="$(driver_major)"
    if [ -z "$drv" ] || [ "$drv" -lt 580 ]; then
      echo "== trt11 skipped: cuda-python 13 / TensorRT 11 need an R580+ driver (found '${drv:-none}')"
      echo "{\"tag\": \"trt11\", \"skipped\": \"driver ${drv:-none} < 580\"}" >"$OUT_DIR/skip-trt11.json"
      continue
    fi
  fi
  VENV="${TMPDIR:-/tmp}/xinfer-gpu-$pass"
  VPY="$VENV/bin/python"
  if [ "$INSTALL" = 1 ]; then
    rm -rf "$VENV"
    "$PY" -m venv --system-site-packages "$VENV"
    step "$pass-install" 360 bash -c "$(declare -f pins_for install_stack); install_stack $pass $VPY '$WHEELS'"
  else
    VPY="$PY"
  fi
  TIMEOUT_OPT=()
  "$VPY" -c "import pytest_timeout" 2>/dev/null && TIMEOUT_OPT=(--timeout=120)
  step "$pass-env" 60 "$VPY" bench/gpu_check.py env --tag "$pass" --out "$OUT_DIR"
  step "$pass-pytest" "$PYTEST_TIMEOUT" "$VPY" -m pytest -m gpu -q -p no:cacheprovider "${TIMEOUT_OPT[@]}" \
    --junitxml="$OUT_DIR/pytest-$pass.xml" tests/gpu
  step "$pass-engines" 180 "$VPY" bench/gpu_check.py engines --tag "$pass" --out "$OUT_DIR"
  step "$pass-bench" 90 "$VPY" bench/gpu_check.py bench --tag "$pass" --out "$OUT_DIR" --rounds 3 --seconds 0.5
done

"$PY" bench/gpu_check.py report --out "$OUT_DIR" || "${VPY:-$PY}" bench/gpu_check.py report --out "$OUT_DIR"
echo "report: $OUT_DIR/gpu-report.md"
