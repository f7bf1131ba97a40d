"""GPU metrics: the ``gpu`` label is the CUDA index this process uses (review D13), and NVML is shut down again
when the stats cannot be built after ``nvmlInit`` (review D15). A test double stands in for pynvml."""

from __future__ import annotations

import sys
import types

import pytest

from xinfer_sdk.server.metrics import GpuStats

# NVML index (PCI bus order) -> (name, uuid)
HOST = [("NVIDIA A100-SXM4-80GB", "GPU-aaaa"), ("NVIDIA L4", "GPU-bbbb"), ("NVIDIA L4", "GPU-cccc")]


def fake_pynvml(gpus=HOST):
    nv = types.ModuleType("pynvml")
    nv.inits = 0
    nv.NVML_TEMPERATURE_GPU = 0

    def init():
        nv.inits += 1

    def shutdown():
        nv.inits -= 1

    nv.nvmlInit, nv.nvmlShutdown = init, shutdown
    nv.nvmlDeviceGetCount = lambda: len(gpus)
    nv.nvmlDeviceGetHandleByIndex = lambda i: i
    nv.nvmlDeviceGetName = lambda h: gpus[h][0]
    nv.nvmlDeviceGetUUID = lambda h: gpus[h][1]
    nv.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=h * 1000, total=80_000)
    return nv


class Gauge:
    def __init__(self, name, doc, labels):
        self.name, self.samples = name, []

    def add_metric(self, labels, value):
        self.samples.append((tuple(labels), value))


def memory_labels(stats):
    fams = {f.name: f for f in stats.collect(Gauge)}
    return fams["xinfer_gpu_memory_used_bytes"].samples


@pytest.fixture
def nvml(monkeypatch):
    def make(env, **kw):
        nv = fake_pynvml(**kw)
        monkeypatch.setitem(sys.modules, "pynvml", nv)
        for k in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"):
            monkeypatch.delenv(k, raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        return nv

    return make


def test_gpu_label_is_the_cuda_index_under_cuda_visible_devices(nvml):
    """CUDA_VISIBLE_DEVICES=2,1: cuda:0 is NVML GPU 2, cuda:1 is NVML GPU 1; NVML GPU 0 is not this process's."""
    nvml({"CUDA_VISIBLE_DEVICES": "2,1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
    stats = GpuStats.open()
    assert sorted(memory_labels(stats)) == [(("0", "NVIDIA L4"), 2000.0), (("1", "NVIDIA L4"), 1000.0)]


def test_a_mixed_host_without_pci_order_says_nvml_not_cuda(nvml):
    """CUDA numbers the fastest GPU first there: the index cannot be known, so it is never passed off as cuda:N."""
    nvml({})
    labels = [lv for lv, _ in memory_labels(GpuStats.open())]
    assert labels == [("nvml:0", "NVIDIA A100-SXM4-80GB"), ("nvml:1", "NVIDIA L4"), ("nvml:2", "NVIDIA L4")]


def test_nvml_is_shut_down_when_the_stats_cannot_be_built(nvml, monkeypatch):
    nv = nvml({})
    monkeypatch.setattr(GpuStats, "__init__", lambda self, nvml_mod, env=None: (_ for _ in ()).throw(
        RuntimeError("NVMLError_Unknown")))
    assert GpuStats.open() is None
    assert nv.inits == 0  # every nvmlInit balanced by an nvmlShutdown
