#!/usr/bin/env bash
# The wheel a user installs: build the sdist and the wheel (no packaging warnings), `twine check` them, install the
# wheel (not the tree) with [cpu,cli] into a fresh venv, and run the README's quick start ("## Tour") against it
# from a folder where the source tree is not importable.
#
#   bash .ci/wheel_check.sh [PYTHON]     (PYTHON: the interpreter that has `build` and `twine`; default .venv/bin/python)
#
# Called by `make test` as its last step. Needs no network when pip's index/find-links are local.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${1:-$ROOT/.venv/bin/python}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/xinfer-wheel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
start=$SECONDS

echo "wheel check: python -m build (sdist + wheel) into $WORK/dist"
# PYTHONDONTWRITEBYTECODE makes setuptools print 'byte-compiling is disabled' warnings that say nothing about us.
if ! env -u PYTHONDONTWRITEBYTECODE "$PY" -m build --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1; then
    cat "$WORK/build.log" >&2
    echo "wheel check: python -m build failed (log above)" >&2
    exit 1
fi
# setuptools' deprecations (e.g. the `project.license` table form) are printed, not raised: any warning fails.
if grep -inE "warning|deprecat" "$WORK/build.log" >&2; then
    echo "wheel check: the build printed the warnings above; fix them in pyproject.toml" >&2
    exit 1
fi
"$PY" -m twine check --strict "$WORK"/dist/*

wheel=$(ls "$WORK"/dist/*.whl)
echo "wheel check: fresh venv, pip install '$(basename "$wheel")[cpu,cli]'"
"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q "$wheel[cpu,cli]"
installed=$("$WORK/venv/bin/python" -m pip list --format=freeze)
for heavy in torch onnx tensorflow grpcio scikit-learn; do
    if grep -iq "^$heavy==" <<<"$installed"; then
        echo "wheel check: [cpu,cli] pulled $heavy; the runtime + command must not need it" >&2
        exit 1
    fi
done

# The README's quick start, line by line, from a folder outside the tree with only the fresh venv on PATH.
mkdir "$WORK/user"
awk '/^## Tour/{t=1} t&&/^```bash/{b=1;next} b&&/^```/{exit} b' README.md >"$WORK/user/tour.sh"
test -s "$WORK/user/tour.sh" || { echo "wheel check: no bash block under '## Tour' in README.md" >&2; exit 1; }
(
    cd "$WORK/user"
    export PATH="$WORK/venv/bin:$PATH"
    unset PYTHONPATH
    where=$(python -c "import xinfer_sdk, os; print(os.path.dirname(xinfer_sdk.__file__))")
    case $where in "$WORK/venv"/*) ;; *) echo "wheel check: xinfer_sdk imported from $where, not the wheel" >&2; exit 1;; esac
    echo "wheel check: README quick start against $where"
    bash -euo pipefail -x tour.sh >tour.log 2>&1 || { cat tour.log >&2; echo "wheel check: the quick start failed" >&2; exit 1; }
    python -c "import xinfer_sdk as xs; print('import ok:', xs.__version__)"
)
echo "wheel check: ok in $((SECONDS - start)) s"
