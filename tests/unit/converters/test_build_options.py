"""What `build` resolves before any work: profile, precision refusals, batch policy, thresholds, inputs."""

from __future__ import annotations

import zipfile

import pytest
from xinfer_sdk.converters.inputs import _refuse_pickle, detect_format

from xinfer_sdk.builder import _batch_notes, _batch_policy, _stem, _thresholds, default_output, resolve_precision
from xinfer_sdk.errors import ConversionError, UserError
from xinfer_sdk.profiles import load_profile
from xinfer_sdk.shapes import parse_shapes


def test_fp8_on_t4_is_refused_by_the_hardware():
    with pytest.raises(UserError, match=r"NVIDIA T4 \(sm_75\) has no FP8 tensor cores"):
        resolve_precision(load_profile("t4"), "fp8")


def test_fp8_is_buildable_where_the_hardware_has_it():
    for name in ("h100-sxm", "h200", "l40s", "l4", "b200"):
        assert resolve_precision(load_profile(name), "fp8") == "fp8", name


def test_a_precision_the_hardware_has_but_no_graph_carries_is_refused():
    with pytest.raises(UserError, match="supports TF32, but xinfer-sdk cannot produce tf32 graphs") as e:
        resolve_precision(load_profile("h100-sxm"), "tf32")
    assert "--precision int8" in str(e.value)


def test_auto_is_the_profiles_default():
    assert resolve_precision(load_profile("t4"), "auto") == "fp16"
    assert resolve_precision(load_profile("cpu"), "auto") == "fp32"
    assert resolve_precision(load_profile("cpu"), "int8") == "int8"


def test_batch_policy_override_and_shapes_check():
    t4 = load_profile("t4")
    pol = _batch_policy(t4, 12, {})
    assert pol.max_batch_size == 12 and pol.preferred_batch_sizes == (8,)
    assert _batch_policy(t4, None, {}).max_batch_size == t4.batch.max_batch_size
    notes = _batch_notes(t4, pol, parse_shapes("input_ids:1x8..32x128..64x512"))
    assert notes and "batch axis follows the batch policy (1..12" in notes[0] and "--max-batch-size 64" in notes[0]
    assert _batch_notes(t4, pol, parse_shapes("input_ids:1x8..12x512")) == []
    with pytest.raises(UserError, match="integer >= 1"):
        _batch_policy(t4, 0, {})


def test_thresholds_come_from_the_profile_with_overrides():
    cpu = load_profile("cpu")
    assert _thresholds(cpu, "int8", None) == cpu.thresholds("int8")
    th = _thresholds(cpu, "int8", {"min_cosine": 0.5, "max_abs_error": None})
    assert th.min_cosine == 0.5 and th.min_top1_agreement == cpu.thresholds("int8").min_top1_agreement
    with pytest.raises(UserError, match="unknown threshold"):
        _thresholds(cpu, "int8", {"min_cos": 0.5})
    with pytest.raises(UserError, match="in 0..1"):
        _thresholds(cpu, "int8", {"min_cosine": 1.5})


def test_default_output_and_stem(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "resnet.onnx").write_bytes(b"x")
    assert default_output("resnet.onnx") == tmp_path / "resnet.xinfer"
    assert _stem("pkg.models:make_encoder") == "make_encoder"


def test_detect_format(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"x")
    (tmp_path / "m.pt2").write_bytes(b"x")
    (tmp_path / "m.pt").write_bytes(b"x")
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "saved_model.pb").write_bytes(b"x")
    assert detect_format(tmp_path / "m.onnx") == "onnx"
    assert detect_format(str(tmp_path / "m.pt2")) == "torch-export"
    assert detect_format(str(tmp_path / "m.pt")) == "torchscript"
    assert detect_format(str(tmp_path / "saved")) == "tensorflow"
    assert detect_format("my_pkg.models:build") == "factory"
    with pytest.raises(ConversionError, match="no model at"):
        detect_format(str(tmp_path / "missing.onnx"))
    with pytest.raises(ConversionError, match="cannot build from a int"):
        detect_format(3)


def test_pickles_are_refused_before_anything_reads_them(tmp_path):
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(b"\x80\x02}q\x00.")  # a bare pickle
    with pytest.raises(ConversionError, match="never unpickles") as e:
        _refuse_pickle(legacy)
    assert "torch.jit.script" in str(e.value) and "--weights" in str(e.value)
    zipped = tmp_path / "model.pt"
    with zipfile.ZipFile(zipped, "w") as z:  # the layout torch.save writes
        z.writestr("model/data.pkl", b"\x80\x02}q\x00.")
        z.writestr("model/version", "3")
    with pytest.raises(ConversionError, match="is a pickled PyTorch object"):
        _refuse_pickle(zipped)
    script = tmp_path / "script.pt"
    with zipfile.ZipFile(script, "w") as z:  # TorchScript: code/ and constants.pkl
        z.writestr("m/constants.pkl", b"")
        z.writestr("m/code/__torch__.py", "")
    _refuse_pickle(script)  # accepted (torch.jit.load reads it with TorchScript's restricted loader)
