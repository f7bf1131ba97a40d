#!/usr/bin/env bash
# System packages the server tests use (each test skips with its reason when its tool is missing):
#   prometheus   a real Prometheus that scrapes /metrics (tests/integration/server/test_metrics.py)
#   libb64-0d    a library Triton's perf_analyzer links against
# then perf_analyzer itself (from PyPI wheels, cached in ~/.cache/xinfer-sdk/perf_analyzer).
#   bash .ci/install-system-deps.sh [PYTHON]
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${1:-${PYTHON:-python3}}"
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  if ! command -v prometheus >/dev/null 2>&1 || [ ! -e /usr/lib/x86_64-linux-gnu/libb64.so.0d ]; then
    apt-get update -q >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus libb64-0d >/dev/null 2>&1 \
      || echo "install-system-deps: apt-get install prometheus libb64-0d failed; those tests will be skipped" >&2
  fi
  # (a system Prometheus the package may start does not matter: the tests run their own on a free port)
else
  echo "install-system-deps: not root or no apt-get; skipping prometheus/libb64 (their tests will skip)" >&2
fi
bash tests/integration/server/setup_perf_analyzer.sh "$PY" \
  || echo "install-system-deps: perf_analyzer could not be fetched; its tests will be skipped" >&2
exit 0
