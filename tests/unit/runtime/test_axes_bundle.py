"""Batch axes and the padding declaration round-trip in the manifest; manifests written before them load as before."""

from __future__ import annotations

import pytest
import yaml

from xinfer_sdk.bundle import Manifest, TensorSpec, save_manifest
from xinfer_sdk.errors import BundleError


def manifest(**kw):
    return Manifest(name="vad", inputs=[TensorSpec("input", "float32", (-1, -1)),
                                        TensorSpec("state", "float32", (2, -1, 128), batch_axis=1),
                                        TensorSpec("sr", "int64", (), batch_axis=None)],
                    outputs=[TensorSpec("stateN", "float32", (2, -1, 128), batch_axis=1)], precision="fp32",
                    max_batch_size=8, profile={}, batch={}, **kw)


def test_batch_axes_survive_a_round_trip():
    m = Manifest.from_dict(manifest().to_dict())
    assert [s.batch_axis for s in m.inputs] == [0, 1, None] and m.outputs[0].batch_axis == 1


def test_a_spec_written_before_batch_axes_existed_batches_on_axis_0():
    d = {"name": "x", "dtype": "float32", "shape": [-1, 3]}
    assert TensorSpec.from_dict(d).batch_axis == 0
    assert "batch_axis" not in TensorSpec.from_dict(d).to_dict()


def test_a_batch_axis_outside_the_shape_is_refused_naming_the_tensor():
    d = manifest().to_dict()
    d["inputs"][1]["batch_axis"] = 3
    with pytest.raises(BundleError, match="state: batch_axis 3 is outside its shape"):
        Manifest.from_dict(d)


def test_extra_and_padding_survive_save_and_load(tmp_path):
    pad = {"inputs": {"input": {"axis": 1, "value": 0}}, "buckets": [512, 1024], "outputs": {}}
    m = manifest(extra={"sequence": {"state": {"state": "stateN"}}}, padding=pad)
    save_manifest(tmp_path, m)
    got = Manifest.from_dict(yaml.safe_load((tmp_path / "xinfer.yaml").read_text()))
    assert got.extra == {"sequence": {"state": {"state": "stateN"}}} and got.padding == pad
