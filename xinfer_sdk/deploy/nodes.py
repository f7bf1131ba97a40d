"""Which nodes a profile's pods may land on: node labels per vendor and device family, and the image variant.

Label sources (docs/kubernetes.md, "Node selection"):
- NVIDIA data-center GPUs: GPU Feature Discovery's ``nvidia.com/gpu.product`` (the NVML name, spaces as '-'), or
  GKE's ``cloud.google.com/gke-accelerator``.
- Jetson: GFD's product label is the CUDA name, the same on every module of a family ('Orin', 'NVIDIA Thor'), and
  its ``nvidia.com/gpu.family`` reads 'undefined' on Thor (no case for compute capability 11), so Jetson pods key on
  ``nvidia.com/gpu.compute.major`` / ``.minor``, which GFD sets on every NVIDIA GPU.
- AMD Instinct: the ROCm node labeller's ``amd.com/gpu.product-name`` (sysfs product_name, spaces as '_').
"""

from __future__ import annotations

from ..errors import UserError
from ..profiles import Profile

GPU_LABELS = ("gfd", "gke", "none")   # gfd: the vendor's node labeller (NVIDIA GFD / AMD node labeller)
NVIDIA_PRODUCT = "nvidia.com/gpu.product"
NVIDIA_CC_MAJOR, NVIDIA_CC_MINOR = "nvidia.com/gpu.compute.major", "nvidia.com/gpu.compute.minor"
AMD_PRODUCT = "amd.com/gpu.product-name"
GKE_ACCELERATOR = "cloud.google.com/gke-accelerator"
# Server image per variant: deploy/docker/Dockerfile.<variant>
IMAGE_VARIANTS = ("cpu", "cuda", "jetson", "jetpack7", "rocm")


def vendor(prof: Profile) -> str:
    return getattr(prof, "vendor", "nvidia") or "nvidia"


def image_variant(prof: Profile) -> str:
    """cpu | cuda | jetson (JetPack 6, Orin) | jetpack7 (Thor, sm_110 and newer Jetsons) | rocm (AMD Instinct)."""
    if prof.kind == "cpu":
        return "cpu"
    if vendor(prof) == "amd":
        return "rocm"
    if prof.kind == "jetson":
        return "jetpack7" if _cc(prof)[0] >= 11 else "jetson"
    return "cuda"


def _cc(prof: Profile) -> tuple[int, int]:
    major, _, minor = (prof.compute_capability or "0.0").partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        return 0, 0


def gpu_selector(prof: Profile, gpu_label: str, notes: list[str]) -> dict[str, str]:
    """The node labels that pin pods to this profile's accelerator (empty on cpu), with notes on what was chosen."""
    if gpu_label not in GPU_LABELS:
        raise UserError(f"--gpu-label {gpu_label!r}: expected one of {', '.join(GPU_LABELS)}")
    resource = prof.kubernetes.gpu_resource
    if prof.kind == "cpu" or not resource:
        return {}
    if gpu_label == "none":
        notes.append(f"--gpu-label none: pods go to any node with a free {resource}, whatever its model; add "
                     "--node-selector to pin the accelerator the bundle was planned for")
        return {}
    if gpu_label == "gke":
        if prof.kind != "gpu" or vendor(prof) != "nvidia" or not prof.match.gke_accelerator:
            raise UserError(f"--gpu-label gke: GKE offers no accelerator known for profile '{prof.name}'",
                            hint="use --gpu-label none with --node-selector KEY=VALUE of your node pool")
        return {GKE_ACCELERATOR: prof.match.gke_accelerator[0]}
    if vendor(prof) == "amd":
        if not prof.match.k8s_gpu_product:
            notes.append(f"profile '{prof.name}' names no {AMD_PRODUCT} value: pods go to any node with a free "
                         f"{resource}; add --node-selector to pin the model")
            return {}
        if len(prof.match.k8s_gpu_product) > 1:
            notes.append(f"{AMD_PRODUCT}={prof.match.k8s_gpu_product[0]} is expected, not confirmed, for "
                         f"{prof.display_name} (boards also report {', '.join(prof.match.k8s_gpu_product[1:])}); "
                         f"check `kubectl get nodes -L {AMD_PRODUCT}` and override with --node-selector")
        return {AMD_PRODUCT: prof.match.k8s_gpu_product[0]}
    if prof.kind == "jetson":
        major, minor = _cc(prof)
        notes.append(f"Jetson: GFD names every module of a family alike, so pods select compute capability "
                     f"{major}.{minor} ({NVIDIA_CC_MAJOR}/{NVIDIA_CC_MINOR}); add --node-selector with a label of "
                     "your own to pin one module type")
        return {NVIDIA_CC_MAJOR: str(major), NVIDIA_CC_MINOR: str(minor)}
    if prof.match.k8s_gpu_product:
        return {NVIDIA_PRODUCT: prof.match.k8s_gpu_product[0]}
    notes.append(f"profile '{prof.name}' names no {NVIDIA_PRODUCT} value: pods go to any node with a free "
                 f"{resource}; add --node-selector to pin the GPU type")
    return {}


def accelerator_notes(prof: Profile) -> list[str]:
    """What the user must know about running this accelerator from the generated manifests."""
    out: list[str] = []
    if vendor(prof) == "amd":
        out.append("AMD: the pod requests amd.com/gpu and the ROCm image (deploy/docker/Dockerfile.rocm); the server "
                   "runs the 'migraphx' backend (ONNX Runtime's MIGraphX execution provider) on device rocm and "
                   "refuses to start rather than fall back to the CPU; never run on AMD hardware (docs/amd.md)")
        out.append("AMD: the server runs as UID 10001; where the node's /dev/kfd and /dev/dri/renderD* belong to the "
                   "'render'/'video' groups (mode 0660), add their numeric IDs to the pod's supplementalGroups")
    elif prof.kind == "gpu" and prof.kubernetes.node_selector.get("kubernetes.io/arch") == "arm64":
        out.append(f"{prof.display_name} nodes are arm64: build the image for linux/arm64; PyPI has no aarch64 "
                   "onnxruntime-gpu, so TensorRT is the GPU engine there")
    if image_variant(prof) == "jetpack7":
        out.append("Thor needs JetPack 7 (L4T r38+, CUDA 13, Python 3.12): build deploy/docker/Dockerfile.jetpack7, "
                   "not the JetPack 6 Dockerfile.jetson")
    return out
