"""AMD GPU metrics from amdsmi, under the NVML collector's names. A recording double stands in for amdsmi: it
has the documented Python API's functions, enums and return keys (amdsmi 7.0.2's amdsmi_interface.py), checks the
argument types the real one checks, and records every call."""

from __future__ import annotations

import enum
import sys
import types

import pytest

from xinfer_sdk.server import metrics as m
from xinfer_sdk.server.metrics import AmdGpuStats, GpuStats, open_gpu_stats

# handle -> readings; "N/A" is what amdsmi's Python layer returns for a value the GPU does not report
MI300X = {"market_name": "AMD Instinct MI300X", "gfx": 37, "vram": (40_960, 196_592), "hotspot": 54,
          "edge": None, "power": {"socket_power": "N/A", "current_socket_power": 412,
                                  "average_socket_power": "N/A", "power_limit": 750}}
MI210 = {"market_name": "AMD Instinct MI210", "gfx": "N/A", "vram": (1024, 65_520), "hotspot": None, "edge": 41,
         "power": {"socket_power": "N/A", "current_socket_power": "N/A", "average_socket_power": 88}}


class AmdSmiLibraryException(Exception):
    pass


def fake_amdsmi(gpus=(MI300X, MI210), init_fails=False):
    smi = types.ModuleType("amdsmi")
    smi.calls = []
    smi.live = 0

    class AmdSmiInitFlags(enum.IntEnum):
        INIT_ALL_PROCESSORS = 0xFFFFFFFF
        INIT_AMD_GPUS = 2

    class AmdSmiTemperatureType(enum.IntEnum):
        EDGE = 0
        HOTSPOT = 1
        VRAM = 2

    class AmdSmiTemperatureMetric(enum.IntEnum):
        CURRENT = 0
        MAX = 1

    class Handle:  # amdsmi_wrapper.amdsmi_processor_handle
        def __init__(self, i):
            self.i = i

    smi.AmdSmiInitFlags, smi.AmdSmiTemperatureType = AmdSmiInitFlags, AmdSmiTemperatureType
    smi.AmdSmiTemperatureMetric = AmdSmiTemperatureMetric

    def rec(name, *args):
        smi.calls.append((name, *args))

    def gpu(h):
        assert isinstance(h, Handle), "amdsmi raises AmdSmiParameterException for anything but a processor handle"
        return gpus[h.i]

    def init(flag=AmdSmiInitFlags.INIT_AMD_GPUS):
        assert isinstance(flag, AmdSmiInitFlags)
        rec("amdsmi_init", flag)
        if init_fails:
            raise AmdSmiLibraryException("AMDSMI_STATUS_DRIVER_NOT_LOADED")
        smi.live += 1

    def shut_down():
        rec("amdsmi_shut_down")
        smi.live -= 1

    def temp(h, sensor, metric):
        assert isinstance(sensor, AmdSmiTemperatureType) and metric is AmdSmiTemperatureMetric.CURRENT
        rec("amdsmi_get_temp_metric", h.i, sensor.name, metric.name)
        value = gpu(h)["hotspot" if sensor is AmdSmiTemperatureType.HOTSPOT else "edge"]
        if value is None:
            raise AmdSmiLibraryException("AMDSMI_STATUS_NOT_SUPPORTED")
        return value

    def activity(h):
        rec("amdsmi_get_gpu_activity", h.i)
        return {"gfx_activity": gpu(h)["gfx"], "umc_activity": 5, "mm_activity": "N/A"}

    def vram(h):
        rec("amdsmi_get_gpu_vram_usage", h.i)
        used, total = gpu(h)["vram"]
        return {"vram_total": total, "vram_used": used}

    def power(h):
        rec("amdsmi_get_power_info", h.i)
        return dict(gpu(h)["power"], gfx_voltage="N/A", soc_voltage="N/A", mem_voltage="N/A")

    smi.amdsmi_init, smi.amdsmi_shut_down = init, shut_down
    smi.amdsmi_get_processor_handles = lambda: [Handle(i) for i in range(len(gpus))]
    smi.amdsmi_get_gpu_asic_info = lambda h: {"market_name": gpu(h)["market_name"], "vendor_id": 4098}
    smi.amdsmi_get_temp_metric, smi.amdsmi_get_gpu_activity = temp, activity
    smi.amdsmi_get_gpu_vram_usage, smi.amdsmi_get_power_info = vram, power
    return smi


class Gauge:
    def __init__(self, name, doc, labels):
        self.name, self.labels, self.samples = name, labels, []

    def add_metric(self, labels, value):
        self.samples.append((tuple(labels), value))


def families(stats):
    return {f.name: (f.labels, f.samples) for f in stats.collect(Gauge)}


@pytest.fixture
def amdsmi(monkeypatch):
    def install(**kw):
        smi = fake_amdsmi(**kw)
        monkeypatch.setitem(sys.modules, "amdsmi", smi)
        return smi

    return install


def test_readings_under_the_nvml_names_and_units(amdsmi):
    smi = amdsmi()
    stats = AmdGpuStats.open()
    assert smi.calls[0] == ("amdsmi_init", smi.AmdSmiInitFlags.INIT_AMD_GPUS) and smi.live == 1
    fams = families(stats)
    a, b = ("amdsmi:0", "AMD Instinct MI300X"), ("amdsmi:1", "AMD Instinct MI210")
    assert fams == {
        "xinfer_gpu_utilization_ratio": (["gpu", "name"], [(a, 0.37)]),  # MI210's gfx_activity is N/A: no sample
        "xinfer_gpu_memory_used_bytes": (["gpu", "name"], [(a, 40_960 * 2**20), (b, 1024 * 2**20)]),
        "xinfer_gpu_memory_total_bytes": (["gpu", "name"], [(a, 196_592 * 2**20), (b, 65_520 * 2**20)]),
        "xinfer_gpu_temperature_celsius": (["gpu", "name"], [(a, 54.0), (b, 41.0)]),
        "xinfer_gpu_power_watts": (["gpu", "name"], [(a, 412.0), (b, 88.0)]),
    }
    nvml_names = {f.name for f in GpuStats.collect(types.SimpleNamespace(nvml=None, handles=[], names={}), Gauge)}
    assert set(fams) == nvml_names  # the same five families the NVML collector yields


def test_temperature_is_the_hotspot_sensor_then_edge(amdsmi):
    smi = amdsmi()
    families(AmdGpuStats.open())
    temps = [c[1:] for c in smi.calls if c[0] == "amdsmi_get_temp_metric"]
    # MI300X answers HOTSPOT (it has no EDGE sensor); MI210's HOTSPOT is unsupported, so EDGE is asked next
    assert temps == [(0, "HOTSPOT", "CURRENT"), (1, "HOTSPOT", "CURRENT"), (1, "EDGE", "CURRENT")]


def test_a_gpu_with_no_readings_gives_no_samples_not_zeros(amdsmi):
    blank = {"market_name": "AMD Instinct MI355X", "gfx": "N/A", "vram": ("N/A", "N/A"), "hotspot": None,
             "edge": None, "power": {"socket_power": 0xFFFF, "current_socket_power": "N/A",
                                     "average_socket_power": "N/A"}}
    amdsmi(gpus=(blank,))
    assert all(samples == [] for _, samples in families(AmdGpuStats.open()).values())


def test_no_amdsmi_means_no_amd_metrics(monkeypatch):
    monkeypatch.setitem(sys.modules, "amdsmi", None)  # import fails (as without ROCm's libamd_smi.so)
    assert AmdGpuStats.open() is None


def test_no_driver_means_no_amd_metrics(amdsmi):
    smi = amdsmi(init_fails=True)
    assert AmdGpuStats.open() is None
    assert [c[0] for c in smi.calls] == ["amdsmi_init"]


def test_no_gpus_shuts_amdsmi_down_again(amdsmi):
    smi = amdsmi(gpus=())
    assert AmdGpuStats.open() is None and smi.live == 0


def test_nvml_first_then_amdsmi(amdsmi, monkeypatch):
    amdsmi()
    monkeypatch.setattr(GpuStats, "open", classmethod(lambda cls: None))
    assert isinstance(open_gpu_stats(), AmdGpuStats)
    sentinel = object()
    monkeypatch.setattr(GpuStats, "open", classmethod(lambda cls: sentinel))
    assert open_gpu_stats() is sentinel


def test_prometheus_lines(amdsmi):
    """What /metrics prints for the AMD GPUs (prometheus_client's own text format)."""
    pc = pytest.importorskip("prometheus_client")
    core = pytest.importorskip("prometheus_client.core")
    amdsmi()
    stats = AmdGpuStats.open()

    class Collector:
        def collect(self):
            yield from stats.collect(core.GaugeMetricFamily)

    reg = pc.CollectorRegistry(auto_describe=False)
    reg.register(Collector())
    text = pc.generate_latest(reg).decode()
    assert 'xinfer_gpu_utilization_ratio{gpu="amdsmi:0",name="AMD Instinct MI300X"} 0.37' in text
    assert 'xinfer_gpu_power_watts{gpu="amdsmi:1",name="AMD Instinct MI210"} 88.0' in text
    line = next(ln for ln in text.splitlines() if ln.startswith('xinfer_gpu_memory_total_bytes{gpu="amdsmi:0"'))
    assert float(line.rsplit(" ", 1)[1]) == 196_592 * 2**20 and m.PREFIX == "xinfer"
