"""device= with several devices: lists, 'all', CPU pseudo-devices, and the errors."""

from __future__ import annotations

import pytest

from xinfer_sdk.errors import UserError
from xinfer_sdk.runtime import devices
from xinfer_sdk.runtime.devices import DeviceStats, engine_device, parse_devices


@pytest.mark.parametrize("spec,want", [
    ("cuda:0,1,2,3", ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]),
    ("cuda:0,cuda:2", ["cuda:0", "cuda:2"]),
    ("gpu:1, 3", ["cuda:1", "cuda:3"]),
    (["cuda:0", "cuda:1"], ["cuda:0", "cuda:1"]),
    ("cpu:0,cpu:1", ["cpu:0", "cpu:1"]),
    ("cpu:0,1", ["cpu:0", "cpu:1"]),
    ("cpu", ["cpu"]),
    ("cuda:1", ["cuda:1"]),
])
def test_device_lists(spec, want):
    assert parse_devices(spec) == want


@pytest.mark.parametrize("spec,msg", [
    ("cuda:0,cuda:0", "names cuda:0 twice"),
    ("cuda:0,cpu:1", "mixes cuda and cpu"),
    ("0,1", "has no kind"),
    ("cuda:0,,1", "empty entry"),
    ("tpu:0", "not understood"),
])
def test_bad_device_lists_say_what_is_wrong(spec, msg):
    with pytest.raises(UserError, match=msg):
        parse_devices(spec)


def test_all_without_a_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(devices, "visible_cuda_devices", lambda: (0, "nvidia-smi is not on PATH"))
    with pytest.raises(UserError, match="device 'all' found no CUDA device.*nvidia-smi is not on PATH"):
        parse_devices("all")


def test_all_lists_every_visible_gpu(monkeypatch):
    monkeypatch.setattr(devices, "visible_cuda_devices", lambda: (3, "cudaGetDeviceCount"))
    assert parse_devices("all") == ["cuda:0", "cuda:1", "cuda:2"]


def test_cpu_pseudo_devices_run_on_the_cpu():
    assert [engine_device(d) for d in ("cpu:1", "cpu", "cuda:2")] == ["cpu", "cpu", "cuda:2"]


def test_device_stats_count_per_device():
    st = DeviceStats(["cuda:0", "cuda:1"])
    st.record("cuda:1", 8, 0.5)
    st.record("cuda:1", 4, 0.25)
    assert st.snapshot() == {"cuda:0": {"batches": 0, "inferences": 0, "compute_s": 0.0},
                             "cuda:1": {"batches": 2, "inferences": 12, "compute_s": 0.75}}
