"""NVML names map to their own profile or to none, never to a neighbour whose name is a prefix (review D1).

Every ``nvml_name`` in ../shared/reference/gpu-specs*.yaml (variants included) is replayed through detection: a name
some profile lists must map to that profile; a name no profile lists must map to nothing. New profiles that list
more names are picked up without touching this file.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from xinfer_sdk.profiles import ProfileRegistry, detect
from xinfer_sdk.profiles.detect import match_nvml_name

REFERENCE = Path(__file__).resolve().parents[3].parent / "shared" / "reference"

# Names a user meets on common clouds whose prefix is another profile's name (A100 -> A10, L40S -> L4, H200 NVL -> H200).
NEIGHBOURS = ["NVIDIA A100-SXM4-40GB", "NVIDIA A100 80GB PCIe", "NVIDIA A100-SXM4-40GB MIG 1g.5gb", "NVIDIA L40S",
              "NVIDIA L40", "NVIDIA L4 MIG-ish", "NVIDIA H200 NVL", "NVIDIA H100 NVL", "NVIDIA A10G MIG 1g.6gb",
              "NVIDIA GeForce RTX 4090 D", "NVIDIA A100X", "Tesla T4G", "NVIDIA B200 NVL"]


def _norm(name: str) -> str:
    n = " ".join(name.lower().replace("_", " ").split())
    return n[len("nvidia "):] if n.startswith("nvidia ") else n


def _base(name: str) -> str:
    """The full-GPU name of a MIG device name ('NVIDIA A100-SXM4-40GB MIG 1g.5gb' -> 'NVIDIA A100-SXM4-40GB')."""
    return re.sub(r"\s+MIG\s+\S+$", "", name, flags=re.I)


def _lists(profile, name: str) -> bool:
    return any(_norm(n) == _norm(_base(name)) for n in profile.match.nvml_names)


def _walk(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "nvml_name":
                yield value
            else:
                yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def _clean(value) -> str | None:
    """The NVML string itself from a reference field ('NVIDIA H20 (unverified)' -> 'NVIDIA H20'); None if there is none."""
    if not isinstance(value, str) or value.strip().lower().startswith("unverified"):
        return None
    text = value.split(";")[0]
    text = re.sub(r"\s*\(unverified\)", "", text)
    text = re.sub(r"\s+(on JetPack|\(JetPack).*$", "", text)
    return text.strip() or None


def reference_names() -> list:
    if not REFERENCE.is_dir():
        return [pytest.param("-", "-", marks=pytest.mark.skip(reason=f"no reference folder at {REFERENCE}"))]
    out = {}
    for path in sorted(REFERENCE.glob("gpu-specs*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for acc in doc.get("accelerators") or ():
            for value in _walk(acc):
                name = _clean(value)
                if name:
                    out.setdefault(name, f"{path.name}:{acc.get('id')}")
    assert out, f"no nvml_name found under {REFERENCE}"
    return [pytest.param(where, name, id=name) for name, where in sorted(out.items())]


@pytest.fixture(scope="module")
def profiles():
    good, bad = ProfileRegistry(use_env=False).load_all()
    assert bad == []
    return good


def _check(name: str, profiles) -> None:
    listing = [p.name for p in profiles if _lists(p, name)]
    got = match_nvml_name(name, profiles)
    if listing:
        assert got is not None and got.name in listing, f"{name!r} -> {got and got.name}, expected one of {listing}"
    else:
        assert got is None, f"{name!r} -> {got.name}, but no profile lists {_base(name)!r} in match.nvml_names"


@pytest.mark.parametrize("where, name", reference_names())
def test_every_reference_nvml_name_maps_to_its_own_profile_or_none(profiles, where, name):
    _check(name, profiles)
    _check(f"{name} MIG 1g.10gb", profiles)  # a MIG device keeps its parent's profile


@pytest.mark.parametrize("name", NEIGHBOURS)
def test_a_name_prefixed_by_another_profiles_name_is_not_that_profile(profiles, name):
    _check(name, profiles)


def test_the_reviewed_cases_never_become_a10_or_l4(profiles):
    for name in ("NVIDIA A100-SXM4-40GB", "NVIDIA A100 80GB PCIe", "NVIDIA A100-SXM4-40GB MIG 1g.5gb",
                 "NVIDIA L40S", "NVIDIA L40"):
        got = match_nvml_name(name, profiles)
        assert got is None or got.name not in ("a10", "a10g", "l4"), (name, got.name)


def test_mig_devices_and_old_drivers_keep_their_profile(profiles):
    assert match_nvml_name("NVIDIA A100-SXM4-80GB MIG 1g.10gb", profiles).name == "a100-sxm4-80gb"
    assert match_nvml_name("A100-SXM4-80GB", profiles).name == "a100-sxm4-80gb"
    assert match_nvml_name("nvidia   h100 pcie", profiles).name == "h100-pcie"


def test_an_unprofiled_gpu_is_no_match_with_a_clear_message(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: avx2\n")
    reg = ProfileRegistry(use_env=False)
    d = detect(reg, root=tmp_path, nvml_names=["NVIDIA Z999 Ultra"], use_env=False)
    assert d.source == "cpu" and d.profile == "cpu"
    assert "found GPU 'NVIDIA Z999 Ultra' but no profile matches it" in d.reason and "--profiles-dir" in d.reason
