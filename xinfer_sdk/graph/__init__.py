"""Graph analysis: what an ONNX graph costs at a given batch and shape (FLOPs, bytes moved at the stored
precision, parameters, peak activations), used by ``plan`` and by the build's memory budget.

    from xinfer_sdk.graph import analyze
    cost = analyze("model.onnx", batch_size=8)

Modules, imported in one direction (each only from those before it):
``opcost`` (per-operator FLOP counts and op classes) <- ``shapes`` (static input shapes, shape inference)
<- ``result`` (``OpCost``, ``ModelCost``) <- ``walk`` (the per-node pass) <- ``cost`` (``analyze``).
"""

from .cost import SHAPES_HINT, ModelCost, OpCost, analyze, graph_inputs, is_batched, load_model, resolve_input_shapes

__all__ = ["analyze", "ModelCost", "OpCost", "load_model", "resolve_input_shapes", "graph_inputs", "is_batched",
           "SHAPES_HINT"]
