"""The host link the planner prices input/output copies at: the profile's sourced host_link_gbps, else PCIe by GPU."""

from __future__ import annotations

import textwrap

import pytest

from xinfer_sdk.errors import ProfileError
from xinfer_sdk.planning.device import PCIE_GBPS, gpu_model
from xinfer_sdk.profiles import load_profile


def _load(tmp_path, body: str):
    (tmp_path / "mine.yaml").write_text(textwrap.dedent(body))
    return load_profile("mine", profiles_dirs=[tmp_path])


def test_gb200_copies_over_nvlink_c2c_not_pcie():
    dev = gpu_model(load_profile("gb200"), "fp16")
    assert dev.link_gbps == 450.0 and "host_link_gbps" in dev.link_basis and "gb200-nvl72" in dev.link_basis
    assert gpu_model(load_profile("b200"), "fp16").link_gbps == PCIE_GBPS["5"]


@pytest.mark.parametrize("name, gen", [("t4", "3"), ("l40s", "4"), ("h100-sxm", "5"), ("mi300x", "5"),
                                       ("rtx-pro-6000-blackwell", "5")])
def test_pcie_generation_by_gpu(name, gen):
    dev = gpu_model(load_profile(name), "fp16")
    assert dev.link_gbps == PCIE_GBPS[gen] and f"Gen{gen}" in dev.link_basis


def test_a_host_link_figure_needs_its_source(tmp_path):
    with pytest.raises(ProfileError, match="sources.host_link_gbps"):
        _load(tmp_path, """
            name: mine
            extends: b200
            host_link_gbps: 128
        """)
    p = _load(tmp_path, """
        name: mine
        extends: b200
        host_link_gbps: unknown
    """)
    assert p.host_link_gbps is None and p.figure_unknown("host_link_gbps")
