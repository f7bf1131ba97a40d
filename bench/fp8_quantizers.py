"""FP8 quantizers side by side: xinfer-sdk's ``fp8`` step, ONNX Runtime's own FP8 mode, NVIDIA Model Optimizer.

The digits MLP and the small transformer encoder (examples/models.py, made in a temporary folder) are quantized by
each tool; each FP8 graph is then executed the way the accuracy gate does (ONNX Runtime CPU, Q/DQ as written,
ReluQuantRewrite / ClipQuantRewrite off) on the eval split, against the FP32 graph. Prints one Markdown table row
per (tool, model): logits cosine, top-1 agreement, accuracy drop (digits), seconds, QuantizeLinear count.

Each tool runs in its own process: Model Optimizer rewrites onnxruntime.quantization's registries in place.
Model Optimizer is not a dependency; install it apart, without its CUDA torch (docs/building.md, FP8):

    pip install --target /tmp/mo --no-deps nvidia-modelopt onnx-graphsurgeon onnxconverter-common polygraphy \\
        pulp omegaconf antlr4-python3-runtime nvidia-ml-py safetensors tqdm regex lief cppimport
    PYTHONPATH=/tmp/mo python bench/fp8_quantizers.py        # all three; without /tmp/mo, modelopt is reported missing
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("xinfer", "ort", "modelopt")
SHAPES = "input_ids:1x4..8x16..32x64,attention_mask:1x4..8x16..32x64"
GATE_REWRITES_OFF = ["ReluQuantRewrite", "ClipQuantRewrite"]


def _examples():
    spec = importlib.util.spec_from_file_location("xinfer_example_models", ROOT / "examples" / "models.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _models(work: Path):
    ex = _examples()
    d, t = ex.digits_mlp(work / "digits"), ex.transformer_onnx(work / "tr")
    return [("digits MLP", d, ["input"], {}), ("transformer", t, ["input_ids", "attention_mask"], {"shapes": SHAPES})]


def _run(path, feeds, *, fp8: bool):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if fp8:
        so.add_session_config_entry("session.disable_quant_qdq", "1")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"],
                                disabled_optimizers=GATE_REWRITES_OFF if fp8 else None).run(None, feeds)


def _row(tool: str, name: str, model, path, names, seconds: float) -> str:
    import onnx

    z = np.load(model.eval)
    feeds = {k: z[k] for k in names}
    ref, got = _run(model.onnx, feeds, fp8=False)[0], _run(path, feeds, fp8=True)[0]
    a, b = ref.ravel().astype(np.float64), got.ravel().astype(np.float64)
    cos = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    top1 = float(np.mean(ref.argmax(-1) == got.argmax(-1)))
    drop = (f"{np.mean(ref.argmax(-1) == z['labels']) - np.mean(got.argmax(-1) == z['labels']):+.4f}"
            if "labels" in z else "-")
    qs = sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(path)).graph.node)
    return f"| {tool} | {name} | {cos:.5f} | {top1:.4f} | {drop} | {seconds:.2f} s | {qs} |"


def _one_tool(tool: str, work: Path) -> None:
    logging.disable(logging.WARNING)
    for name, model, names, kw in _models(work):
        z = np.load(model.calib)
        data = {k: z[k] for k in names}
        out = work / f"{tool}-{name.split()[0]}.onnx"
        if tool == "xinfer":
            import xinfer_sdk as xs

            t = time.perf_counter()
            bundle = xs.build(model.onnx, "h100-sxm", "fp8", calib=model.calib, eval=model.eval,
                              output=work / "b.xinfer", build_engine=False, **kw)
            print(_row("xinfer-sdk fp8 step (whole build)", name, model, bundle.model_file, names,
                       time.perf_counter() - t), flush=True)
            shutil.rmtree(work / "b.xinfer")
        elif tool == "ort":
            from onnxruntime import quantization as q

            batch = 20 if name.startswith("digits") else 16  # its histograms need equal batches: drop the rest
            n = len(data[names[0]]) // batch * batch

            class Reader(q.CalibrationDataReader):
                def __init__(self, feeds):
                    self.feeds = iter(feeds)

                def get_next(self):
                    return next(self.feeds, None)

            reader = Reader([{k: v[i:i + batch] for k, v in data.items()} for i in range(0, n, batch)])
            t = time.perf_counter()
            q.quantize_static(str(model.onnx), str(out), reader, quant_format=q.QuantFormat.QDQ, per_channel=True,
                              activation_type=q.QuantType.QFLOAT8E4M3FN, weight_type=q.QuantType.QFLOAT8E4M3FN,
                              calibrate_method=q.CalibrationMethod.Distribution,
                              op_types_to_quantize=["Conv", "MatMul", "Gemm"],
                              extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                             "QuantizeBias": False,
                                             "OpTypesToExcludeOutputQuantization": ["Conv", "MatMul", "Gemm"]})
            print(_row("onnxruntime QFLOAT8E4M3FN (Distribution)", name, model, out, names, time.perf_counter() - t),
                  flush=True)
        else:
            try:
                import modelopt
                import modelopt.onnx.quantization as moq
            except ImportError as exc:
                print(f"| modelopt | {name} | not importable: {exc} (see this script's docstring) |")
                continue
            for gemv in (True, False):
                t = time.perf_counter()
                moq.quantize(str(model.onnx), quantize_mode="fp8", calibration_data=data, calibration_method="max",
                             calibration_eps=["cpu"], output_path=str(out), high_precision_dtype="fp32",
                             log_level="ERROR", enable_gemv_detection_for_trt=gemv)
                print(_row(f"modelopt {modelopt.__version__} fp8 max, eps cpu, GEMV exclusion {'on' if gemv else 'off'}",
                           name, model, out, names, time.perf_counter() - t), flush=True)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] in TOOLS:
        _one_tool(sys.argv[1], Path(sys.argv[2]))
        return
    print("| quantizer | model | logits cosine | top-1 agreement | accuracy drop | time | QuantizeLinear nodes |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="xinfer-fp8-") as tmp:
        for tool in TOOLS:
            work = Path(tmp) / tool
            work.mkdir()
            subprocess.run([sys.executable, __file__, tool, str(work)], check=False, env=dict(os.environ))


if __name__ == "__main__":
    main()
