# The two commands of the README. Each creates its own virtualenv (.venv) and installs what it needs.
#   make demo   - the main job on the embedded default (cpu profile, ONNX Runtime)
#   make test   - lint + the whole test suite (what CI runs via .ci/run), then the wheel a user installs
#                 (.ci/wheel_check.sh: build, twine check, fresh venv with [cpu,cli], the README's quick start)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# torch first and pinned: 2.13.0 is a CPU wheel on local disk here; a loose `torch` would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: demo test lint clean

$(VENV)/.base:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[cpu,torch,build,serve,examples]'
	touch $@

$(VENV)/.dev: $(VENV)/.base pyproject.toml
	$(PIP) install -q -e '.[cpu,torch,build,serve,examples,tensorflow,otel,profile,dev]'
	touch $@

demo: $(VENV)/.base
	$(PY) examples/demo.py

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/vermin -q --target=3.10- --violations --no-tips --eval-annotations --backport dataclasses xinfer_sdk converters

# pytest exit 5 = no tests collected: a suite that ran nothing is not green, so say so and fail.
# System tools some tests drive for real (Prometheus, Triton's perf_analyzer): installed when possible;
# each of those tests skips with its reason when its tool is missing.
test: lint
	@bash .ci/install-system-deps.sh $(PY)
	@$(PY) -m pytest -q --timeout=600; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5)" >&2; fi; exit $$rc
	@bash .ci/wheel_check.sh $(PY)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
