"""ONNX Runtime ``MIGraphXExecutionProvider`` options (AMD Instinct GPUs): plain functions, no onnxruntime import.

The backend that uses them is ``xinfer_sdk/runtime/backends/migraphx.py`` (``MIGraphXBackend``); what the options
mean and why each is set is in ``migraphx_provider_options`` below and in docs/amd.md.
"""

from __future__ import annotations

from .._ort import installed_ort_version, version_tuple

PROVIDER = "MIGraphXExecutionProvider"

# Provider option names, exactly as ONNX Runtime parses them (onnxruntime/core/providers/migraphx/
# migraphx_execution_provider_info.h, namespace migraphx_provider_option: kDeviceId "device_id", kFp16Enable
# "migraphx_fp16_enable", kBf16Enable "migraphx_bf16_enable", kFp8Enable "migraphx_fp8_enable", kInt8Enable
# "migraphx_int8_enable", kExhaustiveTune "migraphx_exhaustive_tune", kModelCacheDir "migraphx_model_cache_dir";
# all present in the onnxruntime-migraphx 1.27.1 wheel). Values are strings, "1"/"0" for the flags, as the docs'
# table gives them (onnxruntime.ai/docs/execution-providers/MIGraphX-ExecutionProvider.html, "Session Variables").
OPT_DEVICE = "device_id"
OPT_FP16 = "migraphx_fp16_enable"
OPT_BF16 = "migraphx_bf16_enable"
OPT_FP8 = "migraphx_fp8_enable"
OPT_INT8 = "migraphx_int8_enable"
OPT_TUNE = "migraphx_exhaustive_tune"
OPT_CACHE = "migraphx_model_cache_dir"
# migraphx_model_cache_dir and migraphx_bf16_enable replaced the save/load-compiled-model options (deprecated with
# ROCm 6.4 in the docs); the docs' version table stops at ONNX Runtime 1.22.1 without them and 1.27.1 has them, so
# they are passed from 1.23 on (the first release without the ROCm provider). An option a release does not know
# makes ONNX Runtime drop the provider, which the check after session creation would then report.
CACHE_AND_BF16_SINCE = (1, 23)
# precisions whose graph carries its own quantization (Q/DQ nodes made at build time)
QDQ_PRECISIONS = ("int8", "fp8")


def migraphx_provider_options(precision: str, *, device_id: int = 0, cache_dir: str | None = None,
                              fp16: bool | None = None, exhaustive_tune: bool = False,
                              ort_version: str | None = None) -> dict[str, str]:
    """Options for ``("MIGraphXExecutionProvider", options)`` from the bundle's precision.

    - fp32 / tf32 / as-is: no reduced precision, so the GPU computes what the accuracy gate measured.
    - fp16: ``migraphx_fp16_enable=1`` (the graph is FP16 already; the flag lets MIGraphX run the few ops the
      FP16 converter kept in FP32 at FP16 too, as TensorRT 10's FP16 flag does). ``fp16=False`` turns it off.
    - bf16: ``migraphx_bf16_enable=1`` (ONNX Runtime >= 1.23; before that the graph's BF16 types decide).
    - int8 / fp8: the graph's Q/DQ nodes carry the quantization and MIGraphX parses them (on gfx942 its
      ``fp8_ocp_to_fnuz`` pass rewrites OCP E4M3FN Q/DQ to the FNUZ type CDNA 3 has). ``migraphx_int8_enable`` /
      ``migraphx_fp8_enable`` are MIGraphX's *own* calibrated quantization, which ONNX Runtime applies only with a
      calibration table (``calibrate_and_quantize`` in the provider): they are set "0" so the bundle's gated
      graph is what runs. The ops left in float stay FP32 unless ``fp16=True``.
    """
    precision = (precision or "as-is").lower()
    ver = version_tuple(ort_version if ort_version is not None else installed_ort_version())
    new = ver is None or ver >= CACHE_AND_BF16_SINCE
    use_fp16 = precision == "fp16" if fp16 is None else bool(fp16)
    opts: dict[str, str] = {
        OPT_DEVICE: str(int(device_id)),
        OPT_FP16: "1" if use_fp16 else "0",
        OPT_INT8: "0",
        OPT_FP8: "0",
    }
    if precision == "bf16" and new and not use_fp16:  # the provider ignores both when both are set
        opts[OPT_BF16] = "1"
    if exhaustive_tune:
        opts[OPT_TUNE] = "1"
    if cache_dir and new:
        opts[OPT_CACHE] = str(cache_dir)
    return opts


