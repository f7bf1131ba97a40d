"""GPU time of one batch as TensorRT runs the graph: per fused kernel, not per ONNX node.

For each kernel k of the fusion plan (``xinfer_sdk.graph.kernels``: conv/GEMM + epilogue, point-wise chains,
fused attention where the GPU has it, Q/DQ and views folded away) at batch b:

    compute_k = sum over its matrix ops  FLOPs / (matrix peak x eff_matrix x shape_eff(M, N, K))
              + sum over its other ops   FLOPs / (vector peak x eff_vector)
    memory_k  = DRAM bytes / (bandwidth x eff_memory)
                DRAM bytes = its weights (at the compute precision) + every tensor it reads from / writes to
                another kernel at the compute precision, except tensors that fit in the usable part of the L2
                (``l2_fraction`` x profile.l2_cache_mb): those stay on chip (``spill``: a soft threshold);
                when all the weights fit that share they stay in the L2 from one batch to the next
    t_k       = max(soft_max(compute_k, memory_k), kernel_floor) + kernel_gap
                soft_max(a, b) = (a^p + b^p)^(1/p), p = ``roofline_p`` (fitted: how well a kernel overlaps its
                DRAM traffic with its math; 1 = no overlap, large = perfect)

``shape_eff`` is the tensor-core tile efficiency of the layer's GEMM: the useful part of the padded problem,
``M / ceil(M, TILE_M) x N / ceil(N, TILE_N) x C / ceil(C, align)`` (C: the input channels of a convolution,
padded to the MMA's K step; K of a matmul): the 3-channel first convolution, odd channel counts and skinny
GEMMs (batch-1 fully connected layers) reach far less than the peak; depthwise convolutions run on the
vector units. Graph inputs are read and graph
outputs written at their stored size, always from / to DRAM (they cross the host link).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .cost import CostCurve
from .roofline import ROOFLINE_P, soft_max

# Tensor-core tiles: thread-block tile of the GEMM kernels TensorRT picks for large layers (CUTLASS and cuDNN
# ship 64..256 x 64..256 tiles; 64 is the smallest common edge, so only the last partial tile wastes work).
TILE_M = 64
TILE_N = 64
# Reduction (K) step of one MMA instruction, in elements: 32 bytes of operands, i.e. 32 INT8/FP8, 16 FP16/BF16,
# 8 TF32 (PTX ISA, mma.sync shapes m16n8k32 / m16n8k16 / m16n8k8). Input channels are padded to this step;
# fewer than 4 channels use the 4-channel vectorised formats (TensorRT kCHW4 / kHWC4 for the first layer).
K_STEP = {"int8": 32, "fp8": 32, "fp16": 16, "bf16": 16, "tf32": 8, "fp32": 8}
SMALL_CHANNELS = 4
L2_SHARPNESS = 4.0  # how sharply residency falls off as a tensor outgrows the L2 share (see ``spill``)
ACT_BYTES = {"fp32": 4.0, "tf32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0, "fp8": 1.0}


def _roundup(x: np.ndarray, step: float) -> np.ndarray:
    return np.ceil(x / step) * step


def shape_efficiency(gemm: np.ndarray, precision: str) -> np.ndarray:
    """Tile efficiency per op from (M, N, K, count, taps) rows (NaN rows: not a GEMM -> 1)."""
    m, n, k, _, taps = (gemm[:, i] for i in range(5))
    ok = ~np.isnan(m)
    m, n, k, taps = (np.where(ok, v, 1.0) for v in (m, n, k, taps))
    step = K_STEP.get(precision, 8)
    chans = k / np.maximum(taps, 1.0)
    pad = np.where(chans <= SMALL_CHANNELS, SMALL_CHANNELS, _roundup(chans, step))
    eff = (m / _roundup(m, TILE_M)) * (n / _roundup(n, TILE_N)) * (chans / pad)
    return np.where(ok, np.clip(eff, 1e-3, 1.0), 1.0)


def kernel_map(curve: CostCurve, fused_attention: bool) -> np.ndarray:
    """Kernel id per op; with fused attention, every op of an attention pattern runs in one kernel."""
    kg = curve.kernels
    kern = kg.kernel.copy()
    if fused_attention:
        att = kg.attention
        sel = att >= 0
        kern[sel] = kg.kernel[att[sel]]
    return kern


@dataclasses.dataclass(frozen=True)
class KernelTerms:
    """What the kernels of one batch need, before the efficiencies and the L2 share are applied."""

    heads: np.ndarray  # op index of each kernel (where its time is reported)
    matrix_s: np.ndarray  # per kernel: matrix-unit seconds at efficiency 1 (shape efficiency applied)
    vector_s: np.ndarray  # per kernel: vector-unit seconds at efficiency 1
    dram_bytes: np.ndarray  # per kernel: bytes that always go to DRAM (graph inputs / outputs)
    weight_bytes: np.ndarray  # per kernel: its weights (they stay in the L2 across batches when all of them fit)
    edge_kernel: np.ndarray  # per (kernel, tensor) access that stays on chip when the tensor fits the L2 share:
    edge_bytes: np.ndarray  # ... the kernel (position in heads), the bytes,
    edge_size: np.ndarray  # ... and the size of the tensor it belongs to
    n_ops: int

    def dram(self, l2_share_bytes: float) -> np.ndarray:
        weights = self.weight_bytes * spill(np.array([self.weight_bytes.sum()]), l2_share_bytes)[0]
        return self.dram_bytes + weights + np.bincount(self.edge_kernel, weights=self.edge_bytes * spill(self.edge_size,
                                             l2_share_bytes), minlength=len(self.heads))


def spill(size: np.ndarray, share: float) -> np.ndarray:
    """Fraction of a tensor's traffic that reaches DRAM: ~0 when it is well inside the L2 share, ~1 well beyond
    it, 1/2 at the share (a soft threshold: ``1 / (1 + (share / size)^L2_SHARPNESS)``): replacement is not
    perfect LRU, and a tensor near the share competes with the weights streaming through."""
    if share <= 0:
        return np.ones_like(size)
    with np.errstate(divide="ignore", over="ignore"):
        return 1.0 / (1.0 + (share / np.maximum(size, 1.0)) ** L2_SHARPNESS)


def kernel_terms(dev, curve: CostCurve, b: int) -> KernelTerms:
    """Per-kernel compute seconds at efficiency 1 and DRAM traffic of batch b on ``dev`` (its peaks, precision,
    L2 size and whether attention fuses; not its efficiencies)."""
    kg = curve.kernels
    n = len(curve.op_types)
    bb = b if curve.batched else 1
    flops, _ = curve.at(b)
    kern = kernel_map(curve, dev.fused_attention)
    run = kern >= 0
    heads = np.unique(kern[run])
    pos = np.full(n, -1)
    pos[heads] = np.arange(len(heads))
    remap = np.arange(n)
    remap[kg.kernel[run]] = kern[run]  # a kernel id (its first op) -> the merged kernel it now belongs to
    gemm = kg.gemm_at(bb)
    shape = shape_efficiency(gemm, dev.precision)
    # depthwise / narrow grouped convolutions (<= 4 output channels per group) run on the CUDA cores, not as MMAs
    narrow = np.nan_to_num(gemm[:, 1], nan=np.inf) <= SMALL_CHANNELS
    mat = run & curve.matrix & ~(narrow & (np.nan_to_num(gemm[:, 3], nan=1.0) > 1))
    vec = run & ~mat
    k = len(heads)
    matrix_s = np.bincount(pos[kern[mat]], weights=flops[mat] / (dev.matrix_tflops * 1e12 * shape[mat]), minlength=k)
    vector_s = np.bincount(pos[kern[vec]], weights=flops[vec] / (dev.vector_tflops * 1e12), minlength=k)
    wbytes = np.bincount(pos[kern[run]], weights=kg.weight_bytes[run], minlength=k)
    dram = np.zeros(k)
    elems = kg.edges_at(bb)
    act = ACT_BYTES.get(dev.precision, 4.0)
    ek, eb, es = [], [], []
    for e, (prod, cons) in enumerate(zip(kg.edge_producer, kg.edge_consumers)):
        p = remap[prod] if prod >= 0 else -1
        outside = {remap[c] if c >= 0 else -1 for c in cons} - {p}
        if not outside:  # both ends now run in one kernel (fused attention): the tensor never leaves the chip
            continue
        readers = [pos[c] for c in outside if c >= 0]
        stored = elems[e] * kg.edge_itemsize[e]
        size = elems[e] * min(act, kg.edge_itemsize[e])
        if p < 0:  # a graph input: each kernel reading it reads it from DRAM, as stored
            for c in readers:
                dram[c] += stored
            continue
        if -1 in outside:  # a graph output goes to DRAM as stored
            dram[pos[p]] += stored
        else:
            ek.append(pos[p])
            eb.append(size)
            es.append(size)
        for c in readers:
            ek.append(c)
            eb.append(size)
            es.append(size)
    return KernelTerms(heads=heads, matrix_s=matrix_s, vector_s=vector_s, dram_bytes=dram, weight_bytes=wbytes,
                       edge_kernel=np.array(ek, dtype=int), edge_bytes=np.array(eb, dtype=float),
                       edge_size=np.array(es, dtype=float), n_ops=n)


def kernel_seconds(terms: KernelTerms, *, eff_matrix: float, eff_vector: float, eff_memory: float,
                   bandwidth_gbps: float, l2_share_bytes: float, floor: float, gap: float, p: float = ROOFLINE_P
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(time, compute time, memory time) per kernel; p: how compute and memory time combine (``soft_max``)."""
    t_c = terms.matrix_s / eff_matrix + terms.vector_s / eff_vector
    t_m = terms.dram(l2_share_bytes) / (bandwidth_gbps * 1e9 * eff_memory)
    return np.maximum(soft_max(t_c, t_m, p), floor) + gap, t_c, t_m


def roofline_p(dev) -> float:
    """The soft roofline's exponent of this device (GPU: fitted ``roofline_p``; CPU: ``ROOFLINE_P``)."""
    return dev.roofline_p.value if getattr(dev, "roofline_p", None) is not None else ROOFLINE_P


def l2_share(dev) -> float:
    return (dev.l2_bytes or 0.0) * (dev.l2_fraction.value if dev.l2_fraction is not None else 0.0)


def fused_times(dev, curve: CostCurve, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(time, compute time, memory time) per op at batch b: each kernel's figures sit on its first op."""
    terms = kernel_terms(dev, curve, b)
    t_k, c_k, m_k = kernel_seconds(terms, eff_matrix=dev.eff_matrix.value, eff_vector=dev.eff_vector.value,
                                   eff_memory=dev.eff_memory.value, bandwidth_gbps=dev.bandwidth_gbps,
                                   l2_share_bytes=l2_share(dev), floor=dev.kernel_floor.value,
                                   gap=dev.op_overhead.value, p=roofline_p(dev))
    t, t_c, t_m = np.zeros(terms.n_ops), np.zeros(terms.n_ops), np.zeros(terms.n_ops)
    t[terms.heads], t_c[terms.heads], t_m[terms.heads] = t_k, c_k, m_k
    return t, t_c, t_m


def kernel_count(dev, curve: CostCurve) -> int:
    kern = kernel_map(curve, dev.fused_attention)
    return int(len(np.unique(kern[kern >= 0])))
