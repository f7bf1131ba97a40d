"""Vendor-specific accelerator code: one folder per GPU vendor, so adding a vendor touches one place.

    accel/nvidia/engine_plan.py      TensorRT build plans, engine keys and names, flags per TensorRT major, DLA
    accel/nvidia/ort_trt_options.py  ONNX Runtime TensorrtExecutionProvider options from the same plan
    accel/nvidia/_cudart.py          CUDA runtime calls through cuda-python (device probe, buffers, streams)
    accel/amd/migraphx_options.py    ONNX Runtime MIGraphXExecutionProvider options and version gates

Everything here is plain Python that imports no vendor library at module import (cuda-python is imported on
first use), so the plan is made on a CPU-only CI runner and the runtime imports with numpy + pyyaml + one engine.

Place in the one-direction flow (DESIGN.md): ``accel`` sits left of ``converters`` and ``runtime`` and imports
only ``errors``, ``profiles``, ``bundle``, ``shapes`` and ``policy``; both the build (``converters``) and the
runtime backends import from here, never the other way.

To add a vendor: a folder here (its options / build plans and its device probe), a ``Backend`` in
``xinfer_sdk/runtime/backends/`` (the runtime's own room, registered in ``backends/select.py``), and detection
keys in ``xinfer_sdk/profiles`` (plus the vendor's profiles YAML).
"""
