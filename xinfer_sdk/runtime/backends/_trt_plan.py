"""Re-export of the TensorRT plan helpers for the backends (they live in ``xinfer_sdk.engine_plan`` so that
``converters`` can use them without importing the runtime)."""

from ...engine_plan import (  # noqa: F401
    EngineKey,
    check_feed_shapes,
    engine_key,
    make_build_plan,
    matching_engines,
    ort_trt_provider_options,
    parse_device,
    user_engine_dir,
)
