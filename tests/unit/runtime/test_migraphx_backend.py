"""The MIGraphX backend (AMD, device rocm:N), with a recording double of onnxruntime-migraphx.

No AMD GPU or ROCm here: the double records the provider chain and options handed to ``InferenceSession`` and
answers ``get_providers()`` the way onnxruntime-migraphx 1.27.1 does (when the provider cannot load it prints
"EP Error" and returns a CPU-only session, which is what the "falls back" mode replays). Inference itself runs
on the real CPU onnxruntime, so the outputs are real.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from xinfer_sdk.accel.amd.migraphx_options import migraphx_provider_options
from xinfer_sdk.errors import BackendUnavailable, UserError
from xinfer_sdk.profiles import load_profile
from xinfer_sdk.runtime.backends import migraphx as mgx
from xinfer_sdk.runtime.backends.base import device_kind, normalize_device
from xinfer_sdk.runtime.backends.select import choose

real_ort = pytest.importorskip("onnxruntime")

# Every option name ONNX Runtime's MIGraphX provider parses (migraphx_execution_provider_info.h,
# namespace migraphx_provider_option, as in the onnxruntime-migraphx 1.27.1 wheel); anything else makes ORT
# drop the provider.
DOCUMENTED = {"device_id", "migraphx_fp16_enable", "migraphx_bf16_enable", "migraphx_fp8_enable",
              "migraphx_int8_enable", "migraphx_int8_calibration_table_name",
              "migraphx_int8_use_native_calibration_table", "migraphx_exhaustive_tune", "migraphx_mem_limit",
              "migraphx_arena_extend_strategy", "migraphx_external_alloc", "migraphx_external_free",
              "migraphx_external_empty_cache", "migraphx_model_cache_dir"}
MGX = "MIGraphXExecutionProvider"
CPU = "CPUExecutionProvider"


def fake_ort(mode="works", listed=(MGX, CPU), version="1.27.1"):
    """onnxruntime-migraphx as seen from Python. mode: works | falls_back (ORT's silent CPU retry) | raises."""
    ort = types.ModuleType("onnxruntime")
    ort.__version__ = version
    ort.calls = []
    ort.SessionOptions, ort.ExecutionMode = real_ort.SessionOptions, real_ort.ExecutionMode
    ort.GraphOptimizationLevel = real_ort.GraphOptimizationLevel
    ort.get_available_providers = lambda: list(listed)

    class InferenceSession:
        def __init__(self, model, sess_options=None, providers=None):
            ort.calls.append({"model": model, "providers": providers})
            if mode == "raises":
                raise RuntimeError("hipErrorNoDevice: no ROCm-capable device is detected\nmore")
            self._real = real_ort.InferenceSession(model, providers=[CPU])
            names = [p if isinstance(p, str) else p[0] for p in providers]
            self._providers = names if (mode == "works" and MGX in listed) else [CPU]
            self._opts = {p[0]: dict(p[1]) for p in providers if not isinstance(p, str)}

        def get_providers(self):
            return list(self._providers)

        def get_provider_options(self):
            return {k: v for k, v in self._opts.items() if k in self._providers}

        def __getattr__(self, name):  # get_inputs, get_outputs, run
            return getattr(self._real, name)

    ort.InferenceSession = InferenceSession
    return ort


@pytest.fixture
def ort_double(monkeypatch):
    def install(**kw):
        ort = fake_ort(**kw)
        monkeypatch.setitem(sys.modules, "onnxruntime", ort)
        mgx._provider_report.cache_clear()
        return ort

    yield install
    mgx._provider_report.cache_clear()


@pytest.fixture
def bundle(tmp_path):
    from onnx_models import make_mlp_onnx

    from xinfer_sdk.runtime.loader import bundle_from_onnx

    make_mlp_onnx(tmp_path / "mlp.onnx")
    return bundle_from_onnx(tmp_path / "mlp.onnx")


# -- device names ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("given,expected", [("rocm", "rocm:0"), ("hip:1", "rocm:1"), ("ROCm:2", "rocm:2"),
                                            (" HIP ", "rocm:0"), ("gpu:3", "cuda:3"), ("cuda", "cuda:0"),
                                            ("cpu", "cpu")])
def test_amd_devices_normalise_like_cuda(given, expected):
    assert normalize_device(given) == expected
    assert device_kind(given) == expected.partition(":")[0]


@pytest.mark.parametrize("bad", ["rocm:x", "amd", "rocm1", "hip:-1"])
def test_a_device_we_do_not_know_is_one_clear_error(bad):
    with pytest.raises(UserError, match="rocm"):
        normalize_device(bad)


# -- provider options ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision,extra", [
    ("as-is", {}), ("fp32", {}), ("fp16", {"migraphx_fp16_enable": "1"}), ("bf16", {"migraphx_bf16_enable": "1"}),
    ("int8", {}), ("fp8", {}),
])
def test_options_follow_the_bundle_precision(precision, extra):
    opts = migraphx_provider_options(precision, device_id=2, cache_dir="/c", ort_version="1.27.1")
    expected = {"device_id": "2", "migraphx_fp16_enable": "0", "migraphx_int8_enable": "0",
                "migraphx_fp8_enable": "0", "migraphx_model_cache_dir": "/c", **extra}
    assert opts == expected
    assert set(opts) <= DOCUMENTED and all(isinstance(v, str) for v in opts.values())


def test_qdq_bundles_never_ask_migraphx_to_requantize():
    """INT8/FP8 come from the graph's Q/DQ nodes: MIGraphX's own calibrated quantization stays off, and the
    float remainder stays FP32 (as the gate measured) unless fp16=True is asked for."""
    for prec in ("int8", "fp8"):
        opts = migraphx_provider_options(prec, ort_version="1.27.1")
        assert (opts["migraphx_int8_enable"], opts["migraphx_fp8_enable"], opts["migraphx_fp16_enable"]) == \
            ("0", "0", "0")
        assert migraphx_provider_options(prec, fp16=True, ort_version="1.27.1")["migraphx_fp16_enable"] == "1"
    assert migraphx_provider_options("fp16", fp16=False, ort_version="1.27.1")["migraphx_fp16_enable"] == "0"


def test_an_older_onnxruntime_gets_no_option_it_would_refuse():
    opts = migraphx_provider_options("bf16", cache_dir="/c", exhaustive_tune=True, ort_version="1.22.1")
    assert opts == {"device_id": "0", "migraphx_fp16_enable": "0", "migraphx_int8_enable": "0",
                    "migraphx_fp8_enable": "0", "migraphx_exhaustive_tune": "1"}
    assert set(opts) <= DOCUMENTED


# -- the backend on the double ------------------------------------------------------------------------------------
def test_session_gets_the_migraphx_chain_and_runs(ort_double, bundle):
    ort = ort_double()
    bundle.manifest.precision = "fp16"
    cls, why, skipped = choose(bundle, load_profile("mi300x"), "hip:1")
    assert cls is mgx.MIGraphXBackend and skipped == {} and "first usable" in why
    be = cls(bundle, profile=load_profile("mi300x"), device="hip:1")
    with be:
        x = np.ones((3, 8), np.float32)
        out = be.infer({"input": x})
        d = be.describe()
    session_call = ort.calls[-1]
    assert session_call["model"] == str(bundle.model_file)
    (name, opts), cpu = session_call["providers"]
    assert (name, cpu) == (MGX, CPU)
    assert opts == {"device_id": "1", "migraphx_fp16_enable": "1", "migraphx_int8_enable": "0",
                    "migraphx_fp8_enable": "0", "migraphx_model_cache_dir": str(bundle.engines_dir / "migraphx")}
    assert (bundle.engines_dir / "migraphx").is_dir()
    ref = real_ort.InferenceSession(str(bundle.model_file), providers=[CPU]).run(None, {"input": x})[0]
    np.testing.assert_allclose(out["output"], ref)
    assert d["backend"] == "migraphx" and d["device"] == "rocm:1" and d["providers"] == [MGX, CPU]
    assert d["provider_options"]["migraphx_fp16_enable"] == "1"


def test_a_silent_cpu_fallback_is_refused(ort_double, bundle):
    """The provider was listed and the probe passed, yet this session came back CPU-only (as ORT does when
    libmigraphx cannot load): activation fails, naming the provider and the device."""
    ort = ort_double(mode="falls_back")
    be = mgx.MIGraphXBackend(bundle, profile=load_profile("mi300x"), device="rocm:0")
    with pytest.raises(BackendUnavailable, match=r"backend 'migraphx'.*MIGraphXExecutionProvider did not start "
                                                 r"for rocm:0.*\['CPUExecutionProvider'\]"):
        be.activate()
    assert not be.active and ort.calls[-1]["providers"][0][0] == MGX


def test_a_session_error_is_backend_unavailable_with_its_first_line(ort_double, bundle):
    ort_double(mode="raises")
    be = mgx.MIGraphXBackend(bundle, profile=load_profile("mi300x"), device="rocm")
    with pytest.raises(BackendUnavailable, match=r"migraphx.*mlp.onnx: hipErrorNoDevice: no ROCm-capable device "
                                                 r"is detected$"):
        be.activate()


# -- why it is unavailable -------------------------------------------------------------------------------------------
def test_a_cpu_onnxruntime_names_the_package_to_install(ort_double, bundle):
    ort_double(listed=(CPU,), version="1.32.0")
    why = mgx.MIGraphXBackend.unavailable_reason(bundle, load_profile("mi300x"), "rocm:0")
    assert "has no MIGraphXExecutionProvider" in why and "pip install onnxruntime-migraphx" in why and "ROCm" in why


def test_listed_but_not_starting_says_what_is_missing(ort_double, bundle):
    ort_double(mode="falls_back")  # what the 1.27.1 wheel does on this machine: no libmigraphx_c.so.3
    why = mgx.MIGraphXBackend.unavailable_reason(bundle, load_profile("mi300x"), "rocm:0")
    assert "installed but did not start" in why and "fell back to CPU" in why and "/dev/kfd" in why


def test_no_onnxruntime_at_all(monkeypatch, bundle):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    why = mgx.MIGraphXBackend.unavailable_reason(bundle, load_profile("mi300x"), "rocm:0")
    assert "pip install onnxruntime-migraphx" in why


def test_a_precision_the_profile_lacks_is_refused(ort_double, bundle):
    ort_double()
    bundle.manifest.precision = "fp8"
    prof = load_profile("mi300x")
    assert mgx.MIGraphXBackend.unavailable_reason(bundle, prof, "rocm:0") is None
    import dataclasses

    no_fp8 = dataclasses.replace(prof, precisions=tuple(p for p in prof.precisions if p != "fp8"))
    assert "is fp8 but profile 'mi300x' lists only" in mgx.MIGraphXBackend.unavailable_reason(bundle, no_fp8, "rocm")


# -- the fallback chain ----------------------------------------------------------------------------------------------
def test_amd_profile_falls_to_the_next_backend_on_the_cpu(ort_double, bundle):
    """device cpu: MIGraphX is skipped with its reason and ONNX Runtime on the CPU is chosen."""
    ort_double()
    cls, why, skipped = choose(bundle, load_profile("mi300x"), "cpu")
    assert cls.name == "onnxruntime" and skipped["migraphx"] == "it runs on rocm devices, not cpu"
    assert "next usable backend" in why


def test_no_backend_runs_rocm_without_migraphx_and_none_pretends_to(ort_double, bundle):
    ort_double(listed=(CPU,))
    with pytest.raises(BackendUnavailable) as exc:
        choose(bundle, load_profile("mi300x"), "rocm:0")
    msg = exc.value.message
    assert "migraphx: the installed onnxruntime" in msg
    assert "onnxruntime: it runs on cpu / cuda devices, not rocm:0" in msg
    with pytest.raises(BackendUnavailable, match="runs on cpu / cuda devices, not rocm:0"):
        choose(bundle, load_profile("mi300x"), "rocm:0", "onnxruntime")


def test_migraphx_is_never_chosen_for_a_cuda_device(ort_double, bundle):
    ort_double()
    with pytest.raises(BackendUnavailable, match="runs on rocm devices, not cuda:0"):
        choose(bundle, load_profile("mi300x"), "cuda:0", "migraphx")


def test_load_on_an_amd_profile_without_a_gpu(bundle, monkeypatch):
    """The real CPU onnxruntime here: an AMD profile with no device given runs on the CPU with a note; an
    explicit rocm device fails with the reason instead."""
    import xinfer_sdk

    mgx._provider_report.cache_clear()
    model = xinfer_sdk.load(bundle, profile="mi300x", warmup=False)
    try:
        d = model.describe()
        assert (d["device"], d["backend"]) == ("cpu", "onnxruntime")
        assert any("targets a GPU but no GPU backend works here" in n for n in d["notes"])
    finally:
        model.close()
    with pytest.raises(BackendUnavailable, match="MIGraphXExecutionProvider"):
        xinfer_sdk.load(bundle, profile="mi300x", device="rocm:0", warmup=False)
    mgx._provider_report.cache_clear()
