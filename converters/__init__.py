"""Model compilers, each a small step with one job (importable as ``xinfer_sdk.converters``).

``steps.STEPS`` lists them in the order ``xs.build`` runs them; each returns a ``StepResult`` (ok / failed /
skipped) recorded in the bundle manifest (``pipeline.run_steps``):

    inputs.py          read the model safely (ONNX, TorchScript, torch.export, module:factory)
    export.py          PyTorch -> ONNX with dynamic axes, verified against torch at two shapes
    cleanup.py         onnx.checker, onnxslim, shape inference, the IO spec
    budget.py          weights + activations + workspace vs the profile's usable memory
    fp16.py            FP16 graph, IO kept FP32, sensitive ops blocked
    int8.py            INT8 QDQ by calibration (calibration.py reads the data), scheme from the profile
    accuracy.py        the accuracy gate: converted vs FP32 reference on held-out samples
    tensorrt_step.py   the engine build plan; the engine itself via tensorrt_engine.py when a GPU is here
    package.py         the bundle folder: artifacts, checksums, xinfer.yaml
"""
