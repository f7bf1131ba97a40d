"""Capacity planning: model cost, device roofline, queueing simulation of the batch policy.

    import xinfer_sdk as xs
    result = xs.plan("model.onnx", profiles="t4,l4", target_qps=2000, p99="50ms")
    result.best            # {"fewest_devices": "l4", "devices": 3, ...}
    result.to_dict()       # everything `xinfer-sdk plan --json` prints

Modules: ``cost`` (the graph's cost per batch size), ``device`` (roofline per profile), ``host`` (the cpu
profile's figures for this machine), ``queueing`` (discrete-event simulation of the batching core),
``recommend`` (policy search, capacity, replicas), ``bill`` (prices, instances, $/h, $ per 1M, the
cheapest and fewest-devices choice: ``result.bill``), ``calibrate`` (``--measure``), ``tune`` (sweep on
present hardware), ``explain`` (``--explain``).
"""

from .planner import Plan, ProfilePlan, plan

__all__ = ["plan", "Plan", "ProfilePlan"]
