"""NVIDIA: TensorRT build plans (``engine_plan``), ONNX Runtime TensorRT EP options (``ort_trt_options``) and the
CUDA runtime through cuda-python (``_cudart``). See ``xinfer_sdk/accel/__init__.py`` for the layout."""
