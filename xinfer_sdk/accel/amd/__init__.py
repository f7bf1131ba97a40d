"""AMD: ONNX Runtime MIGraphX execution provider options (``migraphx_options``); the backend is
``xinfer_sdk/runtime/backends/migraphx.py``. See ``xinfer_sdk/accel/__init__.py`` for the layout."""
