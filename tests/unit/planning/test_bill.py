"""The bill: prices per profile, whole-instance rounding, $/h and $ per 1M, the cheapest and fewest-devices picks."""

from __future__ import annotations

import math
import textwrap

import pytest

pytest.importorskip("onnx")

from xinfer_sdk.errors import UserError  # noqa: E402
from xinfer_sdk.planning import plan  # noqa: E402
from xinfer_sdk.planning.bill import (  # noqa: E402
    Price,
    check_price_names,
    cost_vs_p99,
    expand_profiles,
    make_bill,
    parse_prices,
    price_for,
    price_of,
)
from xinfer_sdk.profiles import ProfileRegistry, load_profile  # noqa: E402

FAST = {"sim_requests": 3000, "screen": 1000}
TARGET = 250_000.0  # the MLP serves ~70-90k req/s per device: a few devices, fewer than one 8-GPU node

# gpu1: a user price of $1.00 per GPU-hour (one GPU per instance). node8: a sourced 8-GPU instance at $7.20/h
# ($0.90 per GPU-hour: cheaper per GPU, but bought whole). Both extend t4, so both need the same GPU count.
GPU1 = """
    name: gpu1
    extends: t4
    price_per_hour_usd: 1.0
"""
NODE8 = """
    name: node8
    extends: t4
    sources: {pricing: [https://example.com/prices]}
    pricing:
      usd_per_gpu_hour: 0.9
      instance: {provider: aws, name: big.48xlarge, gpus: 8, usd_per_hour: 7.2, region: us-east-1, date: 2026-07-20}
      offers: []
"""


@pytest.fixture
def user_dir(tmp_path):
    d = tmp_path / "profiles"
    d.mkdir()
    (d / "gpu1.yaml").write_text(textwrap.dedent(GPU1))
    (d / "node8.yaml").write_text(textwrap.dedent(NODE8))
    return d


@pytest.fixture
def priced_plan(mlp, user_dir):
    return plan(mlp, profiles="gpu1,node8", p99="5ms", target_qps=TARGET, profiles_dirs=[str(user_dir)], **FAST)


def test_prices_come_from_the_user_price_or_the_sourced_instance(user_dir):
    gpu1 = price_of(load_profile("gpu1", profiles_dirs=[user_dir]))
    node8 = price_of(load_profile("node8", profiles_dirs=[user_dir]))
    assert gpu1 == Price(1.0, 1, 1.0, None, gpu1.source) and "price_per_hour_usd" in gpu1.source
    assert (node8.usd_per_gpu_hour, node8.gpus_per_instance, node8.usd_per_instance_hour) == (0.9, 8, 7.2)
    assert node8.instance == "aws big.48xlarge" and "us-east-1" in node8.source and "2026-07-20" in node8.source
    assert node8.cost(1) == (7.2, 1) and node8.cost(8) == (7.2, 1) and node8.cost(9) == (14.4, 2)
    assert price_of(load_profile("jetson-agx-orin-64gb")) is None


def test_instance_rounding_decides_the_cheapest(priced_plan):
    by = {pp.profile.name: pp for pp in priced_plan.plans}
    n = by["gpu1"].devices
    assert by["node8"].devices == n and 2 <= n <= 7, n  # the premise: rounding up to one node costs more
    bill = priced_plan.bill
    lines = {ln.profile: ln for ln in bill.lines}
    g, b = lines["gpu1"], lines["node8"]
    assert (g.instances, g.usd_per_hour) == (n, pytest.approx(1.0 * n))
    assert (b.instances, b.usd_per_hour, b.idle_gpus) == (1, pytest.approx(7.2), 8 - n)
    # $ per million = $/h / (req/s x 3600) x 1e6, at the target rate
    assert g.usd_per_million == pytest.approx(n / (TARGET * 3600) * 1e6, rel=1e-12)
    assert b.usd_per_million == pytest.approx(7.2 / (TARGET * 3600) * 1e6, rel=1e-12)
    # per GPU node8 is cheaper (0.90 < 1.00), but 8 GPUs are bought to use n <= 7 of them
    assert bill.cheapest.profile == "gpu1" and priced_plan.best["cheapest"] == "gpu1"
    assert by["node8"].cost_per_hour == pytest.approx(7.2) and by["gpu1"].cost_per_hour == pytest.approx(n)
    assert g.arithmetic() == (f"gpu1: {n} GPUs = {n} x $1/GPU-h (user price) = ${n:.2f}/h; 250,000 req/s -> "
                              f"${n / 0.9 / 1000:.3g} per 1M")
    assert b.arithmetic() == (f"node8: {n} GPUs -> 1 x aws big.48xlarge (8 GPUs each, {8 - n} idle) x $7.2/h = $7.20/h; "
                              "250,000 req/s -> $0.008 per 1M")
    assert bill.fewest_devices.profile == priced_plan.best["fewest_devices"]


def test_a_price_override_replaces_the_instance(mlp, user_dir):
    result = plan(mlp, profiles="gpu1,node8", p99="5ms", target_qps=TARGET, profiles_dirs=[str(user_dir)],
                  prices={"node8": 0.5}, **FAST)
    lines = {ln.profile: ln for ln in result.bill.lines}
    n = lines["node8"].devices
    assert lines["node8"].price.gpus_per_instance == 1 and lines["node8"].instances == n
    assert lines["node8"].usd_per_hour == pytest.approx(0.5 * n)
    assert result.bill.cheapest.profile == "node8"
    # to the cent: $0.50 x n per hour over 250,000 req/s
    assert round(lines["node8"].usd_per_million * 1e5) == round(0.5 * n / 0.9 * 100)


def test_profiles_without_a_price_are_shown_not_ranked(mlp, user_dir):
    result = plan(mlp, profiles="gpu1,jetson-agx-orin-64gb", p99="5ms", target_qps=TARGET,
                  profiles_dirs=[str(user_dir)], **FAST)
    bill = result.bill
    jet = next(ln for ln in bill.lines if ln.profile == "jetson-agx-orin-64gb")
    assert jet.meets_slo and jet.devices and not jet.ranked and jet.usd_per_hour is None
    assert "bought, not rented" in jet.why_not_ranked and "--price jetson-agx-orin-64gb=" in jet.why_not_ranked
    assert bill.cheapest.profile == "gpu1"
    only = make_bill(plan(mlp, profiles="jetson-agx-orin-64gb", p99="5ms", target_qps=TARGET, **FAST))
    assert only.cheapest is None and "no profile that meets the SLO has a price" in only.reason
    assert only.fewest_devices.profile == "jetson-agx-orin-64gb"


def test_without_a_target_the_bill_is_one_device_at_capacity(mlp, user_dir):
    result = plan(mlp, profiles="gpu1,node8", p99="5ms", profiles_dirs=[str(user_dir)], **FAST)
    lines = {ln.profile: ln for ln in result.bill.lines}
    for name, per_gpu in (("gpu1", 1.0), ("node8", 0.9)):
        ln = lines[name]
        assert ln.devices is None and ln.instances is None and ln.usd_per_hour == per_gpu
        assert ln.usd_per_million == pytest.approx(per_gpu / (ln.capacity_rps * 3600) * 1e6)
    assert result.bill.cheapest.profile == "node8"  # per GPU-hour at the same capacity
    cap = lines["node8"].capacity_rps
    assert result.bill.cheapest.arithmetic() == (
        f"node8: 1 GPU x $0.9/GPU-h (aws big.48xlarge) at its capacity within the p99: {cap:,.0f} req/s -> "
        f"${0.9 / (cap * 3600) * 1e6:.3g} per 1M")


def test_an_unplannable_profile_is_one_line_and_the_rest_continue(mlp, user_dir):
    # T4 has no FP8 tensor cores: planned at fp8, it cannot be priced; the H100 can
    result = plan(mlp, profiles="t4,h100-sxm", precision="fp8", p99="5ms", target_qps=TARGET, **FAST)
    assert [pp.profile.name for pp in result.plans] == ["h100-sxm"]
    assert result.skipped == [{"profile": "t4", "reason": result.skipped[0]["reason"]}]
    assert "FP8" in result.skipped[0]["reason"]
    assert result.to_dict()["bill"]["skipped"] == result.skipped
    with pytest.raises(UserError, match="FP8"):  # nothing left to plan: the error itself
        plan(mlp, profiles="t4", precision="fp8", **FAST)


def test_json_bill_keys_are_stable(priced_plan):
    data = priced_plan.to_dict()["bill"]
    assert set(data) == {"currency", "basis", "target_qps", "p99_s", "lines", "skipped", "cheapest", "fewest_devices",
                         "reason"}
    assert set(data["lines"][0]) == {
        "profile", "precision", "kind", "meets_slo", "devices", "gpus_per_instance", "instances", "idle_gpus",
        "instance", "usd_per_gpu_hour", "usd_per_instance_hour", "price_source", "secondary_source",
        "secondary_alternative", "usd_per_hour",
        "inferences_per_s",
        "usd_per_million", "capacity_rps", "p99_s", "ranked", "why_not_ranked", "arithmetic"}
    assert set(data["cheapest"]) == {"profile", "devices", "instances", "usd_per_hour", "usd_per_million", "arithmetic"}


def test_parse_prices_and_names():
    assert parse_prices(["l4=0.70", "t4=0.35,a10=1"]) == {"l4": 0.7, "t4": 0.35, "a10": 1.0}
    for bad in ("l4", "l4=", "=1", "l4=cheap", "l4=-1", "l4=inf"):
        with pytest.raises(UserError, match="PROFILE=USD_PER_GPU_HOUR"):
            parse_prices([bad])
    known = ProfileRegistry().names()
    check_price_names({"l4": 1.0}, ["l4", "t4"], known)
    with pytest.raises(UserError, match="no profile named 'l5'"):
        check_price_names({"l5": 1.0}, ["l4"], known)
    with pytest.raises(UserError, match="not among the planned profiles"):
        check_price_names({"t4": 1.0}, ["l4"], known)


def test_profile_all_is_every_concrete_profile_but_cpu(user_dir):
    names = expand_profiles("all", [str(user_dir)])
    reg = ProfileRegistry([str(user_dir)])
    assert "cpu" not in names and "gpu1" in names and "node8" in names and "t4" in names
    assert not any(n.startswith("_") for n in names) and len(names) == len(reg.names()) - 1
    assert expand_profiles("cpu,all", [str(user_dir)])[0] == "cpu"
    assert expand_profiles("t4,l4") == ["t4", "l4"]
    assert expand_profiles("all,t4").count("t4") == 1


def test_cost_against_p99_gets_dearer_as_the_target_tightens(priced_plan):
    curves = cost_vs_p99(priced_plan, factors=(0.5, 1.0, 4.0))
    assert set(curves) == {"gpu1", "node8"}
    gpu1 = curves["gpu1"]
    assert gpu1[1].p99_s == pytest.approx(0.005) and gpu1[1].devices == priced_plan.plans[0].devices
    costs = [pt.usd_per_hour for pt in gpu1]
    assert costs == sorted(costs, reverse=True) and all(math.isfinite(c) for c in costs)


def test_every_shipped_price_is_a_whole_instance_offer():
    profiles, bad = ProfileRegistry().load_all()
    assert not bad
    for p in profiles:
        pr = price_of(p)
        if pr is None:
            assert p.pricing is None and p.price_per_hour_usd is None
            continue
        assert pr.instance and pr.gpus_per_instance >= 1
        assert pr.usd_per_instance_hour / pr.gpus_per_instance == pytest.approx(pr.usd_per_gpu_hour, abs=1e-5)


def test_the_offer_that_runs_the_gpus_needed_for_least_wins(mlp, tmp_path):
    d = tmp_path / "p"
    d.mkdir()
    # the default: an 8-GPU node at $0.90/GPU-h; a 1-GPU instance at $1.20/h beats it up to 5 GPUs, ties at 6, and
    # beats two nodes at 9; a third-party copy lists a 1-GPU instance at $1.00/h: shown, never billed
    offers = ("offers:\n        - {provider: gcp, name: one-gpu, gpus: 1, usd_per_hour: 1.2}"
              "\n        - {provider: oci, name: cheap-copy, gpus: 1, usd_per_hour: 1.0, secondary: true}")
    (d / "mixed.yaml").write_text(textwrap.dedent(NODE8).replace("name: node8", "name: mixed").replace(
        "offers: []", offers))
    prof = load_profile("mixed", profiles_dirs=[d])
    assert price_of(prof).instance == "aws big.48xlarge"
    assert [price_for(prof, n).instance for n in (1, 5, 6, 7, 8, 9)] == ["gcp one-gpu"] * 2 + [
        "aws big.48xlarge"] * 3 + ["gcp one-gpu"]
    assert price_for(prof, 1, secondary=True).instance == "oci cheap-copy"
    result = plan(mlp, profiles="mixed", p99="5ms", target_qps=TARGET, profiles_dirs=[str(d)], **FAST)
    line, n = result.bill.lines[0], result.plans[0].devices
    assert 2 <= n <= 5 and line.usd_per_hour == pytest.approx(1.2 * n) and line.instances == n
    assert line.arithmetic().startswith(f"mixed: {n} GPUs = {n} x gcp one-gpu x $1.2/h = ${1.2 * n:.2f}/h; ")
    assert line.arithmetic().endswith(f"(cheaper in a secondary source: {n} x oci cheap-copy x $1/h = ${n:.2f}/h)")
    assert result.plans[0].cost_per_hour == pytest.approx(1.2 * n)
    data = result.to_dict()["bill"]["lines"][0]
    assert data["secondary_source"] is False and data["secondary_alternative"]["usd_per_hour"] == pytest.approx(n)


def test_plan_all_prices_every_shipped_profile_it_can(mlp):
    result = plan(mlp, profiles="all", precision="int8", p99="20ms", target_qps=TARGET, **FAST)
    expected = {p.name for p in ProfileRegistry().load_all()[0] if p.kind != "cpu"}
    planned = [pp.profile.name for pp in result.plans]
    assert set(planned) | {s["profile"] for s in result.skipped} == expected and "cpu" not in planned
    assert all(s["reason"] for s in result.skipped)
    bill = result.bill
    for ln in bill.lines:
        if ln.usd_per_hour is not None:  # whole instances of the offer billed, and the $ per 1M from that
            assert ln.instances == math.ceil(ln.devices / ln.price.gpus_per_instance)
            assert ln.usd_per_hour == pytest.approx(ln.instances * ln.price.usd_per_instance_hour)
            assert ln.usd_per_million == pytest.approx(ln.usd_per_hour / (TARGET * 3600) * 1e6)
        else:
            assert not ln.ranked and ln.why_not_ranked
    priced = [ln for ln in bill.lines if ln.ranked]
    assert priced and bill.cheapest.usd_per_hour == min(ln.usd_per_hour for ln in priced)
    assert bill.fewest_devices.devices == min(ln.devices for ln in bill.lines if ln.meets_slo)
