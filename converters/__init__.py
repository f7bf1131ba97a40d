"""Model compilers, each a small step with one job (importable as ``xinfer_sdk.converters``).

Steps return a ``StepResult`` (ok / failed / skipped) recorded in the bundle manifest.
"""
