"""The model repository's layout, version policy and memory arithmetic (no model is opened here)."""

from __future__ import annotations

import pytest

from xinfer_sdk.errors import MemoryBudgetError, UserError
from xinfer_sdk.server.config import check_device, read_serve_config
from xinfer_sdk.server.control import ModelControl
from xinfer_sdk.server.repository import VersionPolicy, check_memory, is_repository, scan


def _file(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not read by scan")
    return path


def test_scan_reads_single_version_folders_version_folders_and_lone_files(tmp_path):
    _file(tmp_path / "mlp" / "model.onnx")
    for v in (1, 2, 10):
        _file(tmp_path / "resnet" / str(v) / "model.onnx")
    _file(tmp_path / "text.onnx")
    found = scan(tmp_path)
    assert sorted(found) == ["mlp", "resnet", "text"]
    assert list(found["mlp"].versions) == [1]
    assert sorted(found["resnet"].versions) == [1, 2, 10]
    assert found["text"].versions[1] == tmp_path / "text.onnx"


def test_default_policy_serves_the_highest_version_only(tmp_path):
    for v in (1, 2, 10):
        _file(tmp_path / "m" / str(v) / "model.onnx")
    assert list(scan(tmp_path)["m"].selected()) == [10]


def test_a_models_config_yaml_sets_its_version_policy(tmp_path):
    for v in (1, 2, 3):
        _file(tmp_path / "m" / str(v) / "model.onnx")
    (tmp_path / "m" / "config.yaml").write_text("version_policy: {specific: [1, 3]}\nthreads: 2\n")
    m = scan(tmp_path)["m"]
    assert sorted(m.selected()) == [1, 3] and m.settings == {"threads": 2}


@pytest.mark.parametrize("value,versions", [("all", [1, 2, 3]), ({"latest": 2}, [2, 3]),
                                            ({"latest": {"num_versions": 1}}, [3]),
                                            ({"specific": {"versions": [2]}}, [2])])
def test_version_policy_forms(value, versions):
    assert VersionPolicy.parse(value).select([3, 1, 2]) == versions


def test_a_wrong_version_policy_names_the_forms():
    with pytest.raises(UserError, match=r"version_policy: expected 'latest', 'all'"):
        VersionPolicy.parse({"newest": 1})


def test_a_folder_that_is_not_a_version_is_reported_not_loaded(tmp_path):
    _file(tmp_path / "m" / "1" / "model.onnx")
    (tmp_path / "m" / "v2").mkdir()
    m = scan(tmp_path)["m"]
    assert list(m.versions) == [1] and "whole numbers" in m.problems["v2"]


def test_unknown_key_in_a_models_config_is_named(tmp_path):
    _file(tmp_path / "m" / "model.onnx")
    (tmp_path / "m" / "config.yaml").write_text("max_batch: 4\n")
    with pytest.raises(UserError, match="unknown key.*max_batch"):
        scan(tmp_path)


def test_a_folder_with_one_model_file_is_a_model_not_a_repository(tmp_path):
    _file(tmp_path / "one" / "model.onnx")
    assert not is_repository(tmp_path / "one") and is_repository(tmp_path)


def test_memory_refusal_carries_the_arithmetic():
    est = {"weights_bytes": 2e9, "activations_bytes": 6e9, "total_bytes": 8e9, "batch": 64, "workers": 2,
           "weight_copies": 1, "usable_bytes": 7e9, "usable_basis": "(16 GB - 1 GB reserve) x 0.9",
           "activation_fixed": 0.0, "per_sample": 6e9 / 128, "batched": True}
    with pytest.raises(MemoryBudgetError) as info:
        check_memory("big", est, profile_name="t4", device="cuda:0")
    text = str(info.value)
    assert "weights 2 GB + activations 6 GB at batch 64 x 2 worker(s) = 8 GB > 7 GB usable on cuda:0" in text
    assert "max_batch_size 53 or less" in text


def test_models_already_on_the_device_count_against_the_budget():
    est = {"weights_bytes": 1e9, "activations_bytes": 1e9, "total_bytes": 2e9, "batch": 8, "workers": 1,
           "weight_copies": 1, "usable_bytes": 3e9, "usable_basis": "x", "batched": True}
    check_memory("m", est, profile_name="t4", device="cuda:0")
    with pytest.raises(MemoryBudgetError, match=r"\+ 1.5 GB for the models already on cuda:0 \(a:1\)"):
        check_memory("m", est, profile_name="t4", device="cuda:0", others={"a:1": 1.5e9})


def test_serve_config_takes_a_repository_and_server_keys(tmp_path):
    _file(tmp_path / "models" / "m" / "model.onnx")
    cfg = tmp_path / "config.yaml"
    cfg.write_text("repository: models\nserver: {model_control: poll, poll_interval: 2s, reject_nonfinite: true}\n"
                   "defaults: {version_policy: all}\n")
    sc = read_serve_config(cfg)
    assert [e.path for e in sc.models] == [str(tmp_path / "models")]
    assert sc.server["poll_interval"] == 2.0 and sc.server["model_control"] == "poll"
    assert sc.defaults["version_policy"] == "all"


def test_serve_config_refuses_an_unknown_model_control(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("repository: .\nserver: {model_control: watch}\n")
    with pytest.raises(UserError, match="model_control: expected none, poll or explicit"):
        read_serve_config(cfg)


@pytest.mark.parametrize("device,out", [("cuda:0,1,2,3", "cuda:0,1,2,3"), ("all", "all"), ("CUDA:1", "cuda:1"),
                                        ("cpu:0,cpu:1", "cpu:0,cpu:1")])
def test_device_lists_are_accepted(device, out):
    assert check_device(device) == out


def test_a_device_list_with_a_typo_is_named():
    with pytest.raises(UserError, match="tpu:1"):
        check_device("cuda:0,tpu:1")


def test_load_model_only_with_explicit_mode():
    with pytest.raises(UserError, match="--load-model only applies with --model-control explicit"):
        ModelControl(mode="poll", load_names=["m"])


def test_load_and_unload_are_refused_in_mode_none_saying_how():
    from xinfer_sdk.server.service import ModelControlDisabled

    with pytest.raises(ModelControlDisabled, match="--model-control none") as info:
        ModelControl(mode="none").check_mode("load")
    assert "--model-control explicit" in str(info.value) and info.value.http_status == 400


@pytest.mark.parametrize(("backend", "options", "out"), [
    ("auto", None, {"spinning": False}),
    ("onnxruntime", {"tf32": True}, {"tf32": True, "spinning": False}),
    ("ort", None, {"spinning": False}),
    ("auto", {"spinning": True}, {"spinning": True}),  # the model's own setting wins
    ("tensorrt", None, None),  # a backend that reads no spinning option gets none (it would be refused)
])
def test_served_models_default_to_no_ort_spin_waiting(backend, options, out):
    from xinfer_sdk.server.control import server_options

    assert server_options(backend, options) == out


def test_the_server_passes_its_option_defaults_to_the_loader(tmp_path, monkeypatch):
    import xinfer_sdk.runtime.loader as loader

    seen = {}

    def fake_load(path, **kw):
        seen.update(kw)
        raise UserError("stop here")

    monkeypatch.setattr(loader, "load", fake_load)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.onnx").write_bytes(b"")
    from xinfer_sdk.server.config import build_control

    control = build_control(read_serve_config(None, [str(tmp_path)]), profile="cpu", threads=1)
    m = control.scan()["m"]
    with pytest.raises(UserError, match="stop here"):
        control.load_version(m, 1, tmp_path / "m" / "model.onnx")
    assert seen["options"] == {"spinning": False}
