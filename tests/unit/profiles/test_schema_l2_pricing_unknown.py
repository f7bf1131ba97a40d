"""Schema additions: l2_cache_mb, pricing, 'unknown' figures, vendor/AMD, arch_family (docs/profiles.md)."""

from __future__ import annotations

import textwrap

import pytest

from xinfer_sdk.errors import ProfileError
from xinfer_sdk.profiles import load_profile
from xinfer_sdk.profiles.schema import arch_family_of

PRICING = """
    pricing:
      usd_per_gpu_hour: 0.805
      instance: {provider: aws, name: g6.xlarge, gpus: 1, usd_per_hour: 0.805, region: us-east-1, date: 2026-07-20}
      offers:
        - {provider: aws, name: g6.xlarge, gpus: 1, usd_per_hour: 0.805, region: us-east-1, date: "2026-07-20"}
        - {provider: gcp, name: g2-standard-96, gpus: 8, usd_per_hour: 8.0, secondary: true}
"""


def load(tmp_path, *parts, name="mine"):
    (tmp_path / f"{name}.yaml").write_text("\n".join(textwrap.dedent(t) for t in parts))
    return load_profile(name, profiles_dirs=[tmp_path])


def test_l2_and_pricing_are_exposed(tmp_path):
    p = load(tmp_path, """
        name: mine
        extends: l4
        l2_cache_mb: 48
        sources: {l2_cache_mb: [https://example.com/l4], pricing: [https://example.com/prices]}
    """, PRICING)
    assert p.l2_cache_mb == 48.0
    assert p.usd_per_gpu_hour == 0.805 and p.gpus_per_instance == 1
    assert p.pricing["instance"]["name"] == "g6.xlarge" and p.pricing["instance"]["date"] == "2026-07-20"
    assert p.pricing["offers"][1]["secondary"] is True
    d = p.to_dict()
    assert d["l2_cache_mb"] == 48.0 and d["pricing"]["usd_per_gpu_hour"] == 0.805 and d["usd_per_gpu_hour"] == 0.805


def test_a_user_price_overrides_the_sourced_one_and_its_instance(tmp_path):
    p = load(tmp_path, """
        name: mine
        extends: l4
        price_per_hour_usd: 0.5
        sources: {pricing: [https://example.com/prices]}
    """, PRICING)
    assert p.usd_per_gpu_hour == 0.5 and p.gpus_per_instance == 1


def test_gpus_per_instance_comes_from_the_priced_instance(tmp_path):
    p = load(tmp_path, """
        name: mine
        extends: h100-sxm
        sources: {pricing: [https://example.com/prices]}
        pricing:
          usd_per_gpu_hour: 6.88
          instance: {provider: aws, name: p5.48xlarge, gpus: 8, usd_per_hour: 55.04}
    """)
    assert p.gpus_per_instance == 8 and p.usd_per_gpu_hour == 6.88


@pytest.mark.parametrize("pricing, field, expected", [
    ("{usd_per_gpu_hour: 1.0}", "pricing.instance", "missing required field"),
    ("{usd_per_gpu_hour: cheap, instance: {provider: aws, name: x, gpus: 1, usd_per_hour: 1}}",
     "pricing.usd_per_gpu_hour", "expected USD per GPU-hour"),
    ("{usd_per_gpu_hour: 1, instance: {provider: aws, name: x, gpus: 0, usd_per_hour: 1}}",
     "pricing.instance.gpus", "expected an integer >= 1"),
    ("{usd_per_gpu_hour: 1, instance: {provider: aws, name: x, gpus: 1, usd_per_hour: 1, colour: red}}",
     "pricing.instance.colour", "unknown field"),
    ("{usd_per_gpu_hour: 1, instance: {provider: aws, name: x, gpus: 1, usd_per_hour: 1, date: soon}}",
     "pricing.instance.date", "expected a date like 2026-07-20"),
    ("{usd_per_gpu_hour: 1, instance: {provider: aws, name: x, gpus: 8, usd_per_hour: 80}}",
     "pricing.usd_per_gpu_hour", "is not instance.usd_per_hour / instance.gpus"),
    ("{usd_per_gpu_hour: 1, instance: {provider: aws, name: x, gpus: 1, usd_per_hour: 1}, "
     "offers: [{provider: gcp, name: y, gpus: 1, usd_per_hour: 0.5}]}",
     r"pricing.offers\[0\]", "less than usd_per_gpu_hour"),
])
def test_bad_pricing_names_file_field_and_expectation(tmp_path, pricing, field, expected):
    with pytest.raises(ProfileError) as exc:
        load(tmp_path, f"name: mine\nextends: l4\nsources: {{pricing: [https://x]}}\npricing: {pricing}\n")
    text = str(exc.value)
    assert "mine.yaml" in text
    assert pytest.importorskip("re").search(field, text), text
    assert expected in text, text


def test_pricing_and_l2_need_sources(tmp_path):
    with pytest.raises(ProfileError, match="sources.pricing"):
        load(tmp_path, "name: mine\nextends: cpu\n", PRICING)
    with pytest.raises(ProfileError, match="sources.l2_cache_mb"):
        load(tmp_path, "name: mine\nextends: cpu\nl2_cache_mb: 48\n")


def test_pricing_null_clears_an_inherited_price(tmp_path):
    load(tmp_path, "name: base\nextends: l4\nsources: {pricing: [https://x]}\n", PRICING, name="base")
    p = load(tmp_path, "name: mine\nextends: base\npricing: null\n")
    assert p.pricing is None and p.usd_per_gpu_hour is None and p.gpus_per_instance == 1


def test_unknown_figures_are_none_and_told_apart_from_absent(tmp_path):
    p = load(tmp_path, """
        name: mine
        extends: l4
        peak_tflops: {fp32: 30.3, tf32: 60, fp16: 121, bf16: 121, int8: unknown, fp8: unknown}
        tdp_w: unknown
        l2_cache_mb: unknown
        memory_bandwidth_gbps: unknown
    """)
    assert p.peak_tflops["int8"] is None and p.tdp_w is None and p.l2_cache_mb is None
    assert p.memory_bandwidth_gbps is None
    assert p.figure_unknown("peak_tflops.int8") and p.figure_unknown("tdp_w") and p.figure_unknown("l2_cache_mb")
    assert p.figure_unknown("memory_bandwidth_gbps")
    assert not p.figure_unknown("peak_tflops.fp16") and p.peak_tflops["fp16"] == 121
    assert p.peak("int8") == (None, "unknown (the vendor publishes no dense figure)")
    t4 = load_profile("t4")
    assert t4.peak_tflops["bf16"] is None and not t4.figure_unknown("peak_tflops.bf16")
    assert t4.peak("bf16")[1] == "not published"
    assert p.to_dict()["unknown"] == ["l2_cache_mb", "memory_bandwidth_gbps", "peak_tflops.fp8", "peak_tflops.int8",
                                      "tdp_w"]


def test_unknown_is_only_a_figure_word(tmp_path):
    with pytest.raises(ProfileError, match=r"peak_tflops.int8: expected a number \(TFLOPS / TOPS\) or null or "
                                           r"'unknown', got 'n/a'"):
        load(tmp_path, "name: mine\nextends: l4\npeak_tflops: {int8: n/a}\n")
    with pytest.raises(ProfileError, match="memory_gb"):
        load(tmp_path, "name: mine\nextends: l4\nmemory_gb: unknown\n")


AMD = """
    name: mine
    extends: _datacenter
    vendor: amd
    description: AMD Instinct MI300X
    match: {amd_product_names: ["AMD Instinct MI300X"]}
    compute_capability: gfx942
    memory_gb: 192
    memory_bandwidth_gbps: 5300
    peak_tflops: {fp32: 163.4, tf32: 653.7, fp16: 1307.4, bf16: 1307.4, int8: 2614.9, fp8: 2614.9}
    tdp_w: 750
    backends: [onnxruntime, torch]
    sources: {compute_capability: [https://x], memory_gb: [https://x], memory_bandwidth_gbps: [https://x],
              peak_tflops: [https://x], tdp_w: [https://x]}
"""


def test_amd_profile_is_a_gpu_with_a_gfx_target(tmp_path):
    p = load(tmp_path, AMD)
    assert (p.kind, p.vendor, p.arch_family, p.sm) == ("gpu", "amd", "cdna3", None)
    assert p.match.amd_product_names == ("AMD Instinct MI300X",)
    assert load_profile("l4").vendor == "nvidia"


@pytest.mark.parametrize("change, field, message", [
    ("backends: [tensorrt, onnxruntime]", "backends", "TensorRT runs only on NVIDIA GPUs"),
    ("compute_capability: '9.4'", "compute_capability", "an AMD LLVM target like 'gfx942'"),
    ("vendor: intel", "vendor", "one of"),
])
def test_amd_profile_mistakes(tmp_path, change, field, message):
    with pytest.raises(ProfileError, match=f"{field}: .*{message}"):
        load(tmp_path, AMD, change)


def test_nvidia_compute_capability_must_look_like_a_version(tmp_path):
    with pytest.raises(ProfileError, match="compute_capability: expected a string like '8.6'"):
        load(tmp_path, "name: mine\nextends: l4\ncompute_capability: gfx942\n")


@pytest.mark.parametrize("cc, family", [
    ("7.5", "turing"), ("8.0", "ampere-dc"), ("8.6", "ampere"), ("8.7", "ampere"), ("8.9", "ada"), ("9.0", "hopper"),
    ("10.0", "blackwell"), ("10.3", "blackwell"), ("12.0", "blackwell"), ("12.1", "blackwell"),
    ("11.0", "blackwell-thor"), ("7.2", "volta-xavier"), ("gfx942", "cdna3"), ("gfx950", "cdna4"), ("6.1", "unknown"),
    (None, "unknown"),
])
def test_arch_family_from_compute_capability(cc, family):
    assert arch_family_of(cc) == family


def test_arch_family_of_shipped_profiles_and_override(tmp_path):
    assert [load_profile(n).arch_family for n in ("t4", "a10", "l4", "a100-sxm4-80gb", "h200", "cpu",
                                                  "jetson-agx-xavier", "jetson-orin-nx-16gb")] == [
        "turing", "ampere", "ada", "ampere-dc", "hopper", "cpu", "volta-xavier", "ampere"]
    assert load(tmp_path, "name: mine\nextends: l4\narch_family: hopper\n").arch_family == "hopper"


def test_cli_shows_unknown_figures_as_unknown_and_the_price(cli_run, tmp_path):
    import json

    (tmp_path / "mine.yaml").write_text(textwrap.dedent("""
        name: mine
        extends: l4
        peak_tflops: {fp32: 30.3, tf32: 60, fp16: 121, bf16: 121, int8: unknown, fp8: 242.5}
        tdp_w: unknown
        sources: {pricing: [https://example.com/prices]}
    """) + textwrap.dedent(PRICING))
    code, out, err = cli_run("--profiles-dir", str(tmp_path), "profiles", "show", "mine")
    assert code == 0, err
    rows = {cells[1]: cells[2] for cells in ([c.strip() for c in line.split("\u2502")] for line in out.splitlines())
            if len(cells) > 3}
    assert rows["int8"] == "unknown" and rows["TDP"] == "unknown" and rows["fp16"] == "121 TFLOPS"
    assert "$0.805/GPU-hour: aws g6.xlarge (1 GPU)" in " ".join(out.split())
    code, out, err = cli_run("--profiles-dir", str(tmp_path), "profiles", "show", "mine", "--json")
    d = json.loads(out)
    assert d["peak_tflops"]["int8"] is None and "peak_tflops.int8" in d["unknown"] and d["usd_per_gpu_hour"] == 0.805
    code, out, err = cli_run("--profiles-dir", str(tmp_path), "profiles", "list", "--json")
    assert code == 0 and any(p["name"] == "mine" and p["unknown"] == ["peak_tflops.int8", "tdp_w"]
                             for p in json.loads(out)["profiles"])
    code, out, err = cli_run("profiles", "validate", str(tmp_path / "mine.yaml"))
    assert code == 0 and "ok" in out


def test_set_overrides_of_figures_and_prices():
    p = load_profile("l4", overrides=["l2_cache_mb=unknown", "peak_tflops.int8=unknown"])
    assert p.l2_cache_mb is None and p.figure_unknown("l2_cache_mb") and p.figure_unknown("peak_tflops.int8")
    with pytest.raises(ProfileError, match=r"with --set pricing.usd_per_gpu_hour=2\): pricing.usd_per_gpu_hour: 2 is "
                                           r"not instance.usd_per_hour / instance.gpus") as exc:
        load_profile("l4", overrides=["pricing.usd_per_gpu_hour=2"])
    assert "price_per_hour_usd" in str(exc.value)
    assert load_profile("l4", overrides=["price_per_hour_usd=2"]).usd_per_gpu_hour == 2.0
