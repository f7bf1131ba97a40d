"""Issue 18 item 15: on an 80-column terminal `profiles list` cut names (`a100-…`) a user must type back in."""

from __future__ import annotations

import json


def test_every_profile_name_is_printed_whole_at_80_columns(cli_run, monkeypatch):
    from xinfer_sdk.cli._common import out

    monkeypatch.setattr(out, "width", 80)  # the console exists already: COLUMNS would be read too late
    code, out, _ = cli_run("profiles", "list", "--json")
    names = [p["name"] for p in json.loads(out)["profiles"]]
    assert code == 0 and any(len(n) > 12 for n in names)
    code, out, _ = cli_run("profiles", "list")
    assert code == 0 and max(len(line) for line in out.splitlines()) <= 80
    cells = {cell.strip() for line in out.splitlines() for cell in line.split("│")}
    assert [n for n in names if n not in cells] == []
