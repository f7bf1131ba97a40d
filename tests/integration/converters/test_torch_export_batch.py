"""Issue 18 item 14: ``torch.export.export(model, args)`` fixes the batch size; the build says how to export
with ``dynamic_shapes`` (and the line it prints, run as written, gives a batched bundle)."""

from __future__ import annotations

import re

import pytest

import xinfer_sdk as xs

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript", reason=".pt2 export needs onnxscript (the [build] extra)")


def _note(bundle) -> str:
    notes = [w for w in bundle.manifest.extra["warnings"] if "max_batch_size 0" in w]
    assert len(notes) == 1, bundle.manifest.extra["warnings"]
    return notes[0]


def test_static_torch_export_names_dynamic_shapes_with_the_programs_inputs(tmp_path):
    net = torch.nn.Linear(4, 3).eval()
    pt2 = tmp_path / "static.pt2"
    torch.export.save(torch.export.export(net, (torch.randn(2, 4),)), str(pt2))
    bundle = xs.build(pt2, "cpu", "fp32", output=tmp_path / "s.xinfer")
    note = _note(bundle)
    assert bundle.manifest.max_batch_size == 0
    assert "\n" not in note and "dynamic_shapes" in note
    # the suggestion is runnable as printed, with forward()'s own argument name, and gives a batched bundle
    code = re.search(r"to batch, export it with (.*)$", note).group(1)
    scope = {"torch": torch, "model": net, "args": (torch.randn(2, 4),)}
    exec(code.replace("torch.export.export(", "program = torch.export.export("), scope)  # noqa: S102
    program = scope["program"]
    torch.export.save(program, str(tmp_path / "dyn.pt2"))
    again = xs.build(tmp_path / "dyn.pt2", "cpu", "fp32", output=tmp_path / "d.xinfer")
    assert again.manifest.max_batch_size == 32
