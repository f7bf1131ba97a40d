#!/usr/bin/env bash
# Fetch Triton's perf_analyzer (the real C++ binary) into a cache folder, from package registries only:
#   bash tests/integration/server/setup_perf_analyzer.sh [PYTHON]
# PyPI's `perf-analyzer` is an empty placeholder; the binary ships inside the tritonclient manylinux wheels up to
# 2.60.0, and those from 2.52 on need glibc 2.38, so 2.51.0's is taken. It needs libb64.so.0d (Debian's libb64-0d,
# else nvidia-pytriton's bundled copy) and libcudart.so.12 (PyPI's nvidia-cuda-runtime-cu12; no GPU is needed).
# Result: $DIR/perf_analyzer (a wrapper that sets LD_LIBRARY_PATH) ; DIR=${XINFER_PERF_ANALYZER_DIR:-~/.cache/xinfer-sdk/perf_analyzer}
set -euo pipefail
PY="${1:-${PYTHON:-python3}}"
DIR="${XINFER_PERF_ANALYZER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/xinfer-sdk/perf_analyzer}"
if [ -x "$DIR/perf_analyzer" ] && "$DIR/perf_analyzer" --version >/dev/null 2>&1; then
  echo "perf_analyzer ready: $DIR/perf_analyzer"; exit 0
fi
mkdir -p "$DIR/bin" "$DIR/lib"
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
"$PY" -m pip download -q --no-deps --only-binary=:all: --platform manylinux1_x86_64 --python-version 3.11 \
    tritonclient==2.51.0 -d "$TMP/tc"
"$PY" - "$TMP/tc" "$DIR/bin" <<'PYEOF'
import glob, os, sys, zipfile
whl = glob.glob(os.path.join(sys.argv[1], "tritonclient-2.51.0-*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith("/bin/perf_analyzer"))
    out = os.path.join(sys.argv[2], "perf_analyzer")
    with z.open(name) as src, open(out, "wb") as dst:
        dst.write(src.read())
os.chmod(out, 0o755)
PYEOF
"$PY" -m pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 --python-version 3.11 \
    nvidia-cuda-runtime-cu12 -d "$TMP/cu"
"$PY" - "$TMP/cu" "$DIR/lib" <<'PYEOF'
import glob, os, sys, zipfile
whl = glob.glob(os.path.join(sys.argv[1], "nvidia_cuda_runtime_cu12-*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith("/libcudart.so.12"))
    with z.open(name) as src, open(os.path.join(sys.argv[2], "libcudart.so.12"), "wb") as dst:
        dst.write(src.read())
PYEOF
B64=""
for f in /usr/lib/x86_64-linux-gnu/libb64.so.0d /lib/x86_64-linux-gnu/libb64.so.0d; do [ -e "$f" ] && B64="$f"; done
if [ -z "$B64" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q libb64-0d >/dev/null 2>&1 || true
  for f in /usr/lib/x86_64-linux-gnu/libb64.so.0d /lib/x86_64-linux-gnu/libb64.so.0d; do [ -e "$f" ] && B64="$f"; done
fi
if [ -z "$B64" ]; then  # last resort: nvidia-pytriton's bundled copy (a large wheel)
  "$PY" -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_35_x86_64 --python-version 3.11 \
      nvidia-pytriton==0.7.0 -d "$TMP/pt"
  "$PY" - "$TMP/pt" "$DIR/lib" <<'PYEOF'
import glob, os, sys, zipfile
whl = glob.glob(os.path.join(sys.argv[1], "nvidia_pytriton-*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if "/libb64-" in n and ".so.0d" in n)
    with z.open(name) as src, open(os.path.join(sys.argv[2], "libb64.so.0d"), "wb") as dst:
        dst.write(src.read())
PYEOF
else
  ln -sf "$B64" "$DIR/lib/libb64.so.0d"
fi
cat > "$DIR/perf_analyzer" <<WRAP
#!/bin/sh
LD_LIBRARY_PATH="$DIR/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$DIR/bin/perf_analyzer" "\$@"
WRAP
chmod +x "$DIR/perf_analyzer"
"$DIR/perf_analyzer" --version
echo "perf_analyzer ready: $DIR/perf_analyzer"
