"""`plan --explain`: every figure of a profile's plan, one line each, with how it was derived."""

from __future__ import annotations

from typing import Any

import numpy as np

from .bill import bill_line
from .device import batch_time
from .recommend import DELAY_FRACTIONS, HEADROOM, NEAR_BEST
from .result import ProfilePlan


def si(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def rate(value: float | None) -> str:
    """A rate as people write it: ``100,000`` (never ``1e+05``); small rates keep 4 significant digits."""
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.4g}"


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.3g} ms" if seconds >= 1e-4 else f"{seconds * 1e6:.3g} us"


def bound_text(pp: ProfilePlan, b: int) -> str:
    """Which bound applies at batch b, and why (intensity against the ridge point)."""
    bt = batch_time(pp.device, pp.curve, b)
    dev = pp.device
    intensity = bt.flops / bt.bytes if bt.bytes else float("inf")
    parts = bt.parts()
    which = bt.bound
    share = parts[which] / bt.seconds if bt.seconds else 0.0
    why = (f"{si(bt.flops, 'FLOP')} over {si(bt.bytes, 'B')} moved = {intensity:.3g} FLOP/B "
           f"{'above' if intensity >= dev.ridge else 'below'} the ridge point {dev.ridge:.3g} FLOP/B")
    detail = {"overhead": "per-batch overhead, kernel floors and per-op overhead",
              "host copies": "copying inputs and outputs over the host link"}.get(which, which)
    return f"batch {b}: {which} bound ({detail}: {share:.0%} of {ms(bt.seconds)}); {why}"


def bound_summary(pp: ProfilePlan) -> dict[str, Any]:
    out = {"batch_1": bound_text(pp, 1)}
    if pp.choice.policy is not None and pp.choice.policy.max_batch_size > 1:
        b = pp.choice.policy.max_batch_size
        out[f"batch_{b}"] = bound_text(pp, b)
    return out


def lines(pp: ProfilePlan, *, p99: float, target_qps: float | None) -> list[tuple[str, str, str]]:
    c, dev, mem, ch = pp.curve, pp.device, pp.memory, pp.choice
    out: list[tuple[str, str, str]] = []

    def add(figure: str, value: str, how: str) -> None:
        out.append((figure, value, how))

    # model
    f1 = c.total_flops(1)
    per = c.total_flops(2) - f1 if c.batched else f1
    classes = {}
    flops1, _ = c.at(1)
    for cls, f in zip(c.op_classes, flops1):
        classes[cls] = classes.get(cls, 0.0) + f
    top = ", ".join(f"{k} {v / max(f1, 1):.0%}" for k, v in sorted(classes.items(), key=lambda kv: -kv[1])[:3])
    shapes = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in c.base.input_shapes.items())
    add("model FLOPs per sample", si(per, "FLOP"),
        f"sum of per-op counts over {len(c.op_types)} ONNX nodes at {shapes} (OPT shapes); {top}")
    add("parameters", f"{c.param_count:,} = {si(c.weight_bytes, 'B')} at {c.precision.upper()}",
        f"initializers of the graph ({si(c.param_bytes, 'B')} as stored in {c.graph_precision.upper()})"
        + ("; conv/matmul weights re-priced at the planned precision" if c.precision != c.graph_precision else ""))
    add("activation memory per sample", si(c.activation[1], "B"),
        "growth per sample of the peak of live tensors in a topological walk at the MAX shapes")
    add("input + output bytes per sample", si(c.io[1], "B"), "graph inputs + outputs at the OPT shapes")
    # device
    add("matrix peak (conv, matmul)", f"{dev.matrix_tflops:g} T{'OPS' if dev.precision == 'int8' else 'FLOPS'}",
        dev.matrix_basis)
    add("vector peak (other ops)", f"{dev.vector_tflops:g} TFLOPS", dev.vector_basis)
    add("memory bandwidth", f"{dev.bandwidth_gbps:.4g} GB/s", dev.bandwidth_basis)
    for name, fac in (("efficiency, matrix units", dev.eff_matrix), ("efficiency, vector units", dev.eff_vector),
                      ("efficiency, memory", dev.eff_memory)):
        add(name, f"{fac.value:.3g}", fac.source)
    unit = "kernel" if dev.engine == "fused" else "executed op"
    add(f"kernel floor per {unit}", ms(dev.kernel_floor.value), dev.kernel_floor.source)
    add(f"overhead per {unit}", ms(dev.op_overhead.value), dev.op_overhead.source)
    if dev.engine == "fused":
        out.extend(_fused_lines(pp))
    add("per-batch overhead", ms(dev.batch_overhead.value), dev.batch_overhead.source)
    add("per-request overhead", ms(dev.request_overhead.value), dev.request_overhead.source)
    if dev.link_gbps:
        add("host link", f"{dev.link_gbps:g} GB/s x {dev.eff_link.value:g}", f"{dev.link_basis}; {dev.eff_link.source}")
    else:
        add("host link", "none", dev.link_basis)
    add("ridge point", f"{dev.ridge:.3g} FLOP/B",
        "matrix peak x efficiency / (bandwidth x efficiency): ops with fewer FLOPs per byte are memory-bound")
    # latency per batch
    for bt in pp.table:
        io = f" + copies {ms(bt.copy_s)}" if dev.link_gbps else ""
        add(f"latency at batch {bt.batch}", ms(bt.seconds),
            f"overhead {ms(dev.batch_overhead.value)} + {bt.batch} requests x {ms(dev.request_overhead.value)}{io} + "
            f"compute-bound ops {ms(bt.compute_s)} + memory-bound ops "
            f"{ms(bt.memory_s)} + floors and per-{unit} overhead {ms(bt.floor_s)}; each {unit.split()[-1]} "
            f"soft_max(FLOPs / (peak x eff), bytes / (bandwidth x eff)); {rate(bt.batch / bt.seconds)} samples/s")
    add("bound at batch 1", bound_text(pp, 1).split(": ", 1)[1], "the largest share of the batch's time")
    if ch.policy is not None and ch.policy.max_batch_size > 1:
        b = ch.policy.max_batch_size
        add(f"bound at batch {b}", bound_text(pp, b).split(": ", 1)[1], "the largest share of the batch's time")
    # memory
    add("usable memory", si(mem.usable_bytes, "B"), mem.usable_basis)
    add("largest batch that fits", str(mem.max_batch),
        f"floor((usable - weights {si(mem.weights_bytes, 'B')} - fixed activations {si(mem.activation_fixed, 'B')})"
        f" / (activations {si(mem.activation_per_sample, 'B')} + IO {si(mem.io_per_sample, 'B')} per sample)), "
        "one worker")
    rule = "-" if mem.seed_rule_ok is None else ("ok" if mem.seed_rule_ok else "FAILS")
    add("seed rule: memory >= 1.5 x parameters", f"{si(mem.seed_rule_bytes, 'B')} needed: {rule}",
        f"1.5 x {si(mem.weights_bytes, 'B')} against {si(mem.total_bytes, 'B')} total; it ignores activations, "
        f"which the real estimate above counts ({si(mem.need(max(1, mem.max_batch)), 'B')} at batch "
        f"{max(1, mem.max_batch)})")
    # queueing
    fr = ", ".join(f"{f:.0%}" for f in DELAY_FRACTIONS)
    add("policy search", f"p99 <= {ms(p99)}",
        f"max_batch_size in powers of two up to {min(mem.max_batch, 256)}, max_batch_delay in {{{fr}}} of p99, "
        f"1-2 workers, preferred sizes none or the efficient ones; discrete-event simulation of the batching core "
        f"under Poisson arrivals; feasible when p99 meets the target, nothing is rejected, the device is busy at "
        f"most {HEADROOM:.0%} of the time and the rate is at most {HEADROOM:.0%} of what the policy sustains; lowest p99 wins, ties within {NEAR_BEST - 1:.0%} go to a "
        "cap whose full batch meets the target, then to the most capacity")
    if ch.capacity_policy is not None:
        add("capacity of one device", f"{rate(ch.capacity)} req/s",
            f"highest Poisson rate meeting p99 (bisection over simulations) with {_policy(ch.capacity_policy)}")
    if ch.policy is not None and ch.sim is not None:
        s = ch.sim
        add("recommended policy", _policy(ch.policy), ch.reason)
        add("simulated at that load", f"p50 {ms(s.p50)}, p99 {ms(s.p99)}, utilisation {s.utilisation:.0%}",
            f"{s.requests:,} simulated requests at {rate(s.rate)} req/s; mean batch {s.mean_batch:.3g}")
    else:
        add("recommended policy", "none", ch.reason)
    if target_qps is not None:
        if ch.replicas is not None:
            add("replicas", str(ch.replicas),
                f"fewest n with {rate(target_qps)} / n req/s per device feasible; starts at ceil({rate(target_qps)} / capacity "
                f"{rate(ch.capacity or 0)})")
        if pp.cost_per_hour is not None:
            add("cost", f"${pp.cost_per_hour:.4g}/h", bill_line(pp, target_qps).arithmetic())
    if pp.calibration:
        cal = pp.calibration
        add("calibration", f"max error {cal['max_abs_error']:.1%} over batch {cal['batches'][0]}-{cal['batches'][-1]}",
            cal["method"])
    unknown = [t for t, k in zip(c.op_types, c.op_classes) if k == "other"]
    if unknown:
        add("ops priced as generic", str(len(unknown)), "custom-domain ops: one FLOP per output element, bytes in + out")
    return out


def _fused_lines(pp: ProfilePlan) -> list[tuple[str, str, str]]:
    """How the GPU engine runs the graph: kernels, fused attention, L2, tile efficiency, where the factors came from."""
    from .gpu import kernel_count, kernel_map, l2_share, roofline_p, shape_efficiency

    c, dev = pp.curve, pp.device
    if c.kernels is None:
        return [("kernels", "one per ONNX node", "the graph's kernel plan is not available; priced op by op")]
    kern = kernel_map(c, dev.fused_attention)
    runs = int((kern >= 0).sum())
    att = int(len(set(c.kernels.attention[c.kernels.attention >= 0].tolist())))
    gemm = c.kernels.gemm_at(1)
    eff = shape_efficiency(gemm, dev.precision)
    mat = ~np.isnan(gemm[:, 0])
    flops1, _ = c.at(1)
    wavg = float((eff[mat] * flops1[mat]).sum() / max(flops1[mat].sum(), 1.0)) if mat.any() else 1.0
    worst = float(eff[mat].min()) if mat.any() else 1.0
    return [
        ("kernels (TensorRT-like fusion)", f"{kernel_count(dev, c)} kernels for {runs} executed ONNX nodes",
         "conv/GEMM + bias/BN/activation/residual in one kernel, point-wise chains in one kernel, Q/DQ and views "
         "folded (xinfer_sdk.graph.kernels)"),
        ("attention", f"{att} pattern(s), {'fused: one kernel each' if dev.fused_attention else 'not fused'}",
         dev.attention_basis or "-"),
        ("on-chip L2", "none" if not dev.l2_bytes else f"{dev.l2_bytes / 2**20:g} MiB x share "
                                                        f"{dev.l2_fraction.value:.3g} = {l2_share(dev) / 2**20:.3g} MiB",
         f"{dev.l2_basis}; a tensor between two kernels that fits the share stays on chip (soft threshold); share: "
         + (dev.l2_fraction.source if dev.l2_fraction else "-")),
        ("compute / memory overlap", f"p = {roofline_p(dev):.3g}: kernel time (compute^p + memory^p)^(1/p)",
         dev.roofline_p.source if dev.roofline_p is not None else "ROOFLINE_P (CPU-validated)"),
        ("tensor-core tile efficiency at batch 1", f"{wavg:.3g} (FLOP-weighted), worst layer {worst:.3g}",
         "useful part of the padded GEMM: M / ceil(M, 64) x N / ceil(N, 64) x input channels / ceil(channels, MMA K "
         "step); the 3-channel first conv pads to 4, small GEMMs pad to the tile"),
        ("device factors from", dev.factors_basis or "-", "xinfer_sdk/planning/gpu_factors.yaml (bench/"
                                                          "plan_gpu_reference.py --write), else sourced priors"),
    ]


def _policy(p) -> str:
    pref = ",".join(map(str, p.preferred_batch_sizes)) or "none"
    return (f"max_batch_size {p.max_batch_size}, max_batch_delay {p.max_batch_delay * 1e3:g} ms, preferred {pref}, "
            f"device_concurrency {p.device_concurrency}")
