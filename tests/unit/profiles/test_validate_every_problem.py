"""Issue 18 item 15b: ``profiles validate`` reports every problem of a file, not only the first."""

from __future__ import annotations

import json

import pytest

from xinfer_sdk.errors import ProfileError
from xinfer_sdk.profiles import ProfileRegistry

# three field problems: a wrong type, an unknown field, a wrong type inside a list
THREE = "name: three\nextends: t4\nbatch: {max_batch_size: many}\nmemroy_gb: 16\nprecisions: [fp16, 8]\n"


def test_validate_prints_one_line_per_problem_and_exits_2(cli_run, tmp_path):
    bad = tmp_path / "three.yaml"
    bad.write_text(THREE)
    code, out, err = cli_run("profiles", "validate", str(bad))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 3 and all(line.startswith("error: ") and "three.yaml" in line for line in lines)
    assert ["batch.max_batch_size" in lines[0], "memroy_gb" in lines[1], "precisions[1]" in lines[2]] == [True] * 3


def test_validate_json_lists_every_problem(cli_run, tmp_path):
    (tmp_path / "three.yaml").write_text(THREE)
    code, out, _ = cli_run("profiles", "validate", str(tmp_path / "three.yaml"), "--json")
    (result,) = json.loads(out)["results"]
    assert code == 2 and result["ok"] is False and len(result["errors"]) == 3
    assert result["error"] == result["errors"][0]


def test_rules_on_the_merged_profile_are_all_reported(tmp_path):
    """Cross-field rules (a default precision not offered, MIGraphX on NVIDIA) run once the fields are valid."""
    path = tmp_path / "rules.yaml"
    path.write_text("name: rules\nextends: t4\ndefault_precision: bf16\nbackends: [migraphx]\n")
    prof, problems = ProfileRegistry([tmp_path]).problems(path)
    assert prof is None
    assert sorted(p.field for p in problems) == ["backends", "default_precision"]


def test_loading_a_broken_profile_still_stops_at_the_first_problem(tmp_path):
    path = tmp_path / "three.yaml"
    path.write_text(THREE)
    with pytest.raises(ProfileError, match="batch.max_batch_size"):
        ProfileRegistry([tmp_path]).validate_file(path)


def test_a_good_file_has_no_problems(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nextends: l4\nprice_per_hour_usd: 0.8\n")
    prof, problems = ProfileRegistry([tmp_path]).problems(path)
    assert problems == [] and prof.name == "mine"
