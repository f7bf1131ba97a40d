"""User profiles: folders, XINFER_PROFILES_PATH, --set overrides, and one-line errors for broken files."""

from __future__ import annotations

import textwrap

import pytest

from xinfer_sdk.errors import ProfileError
from xinfer_sdk.profiles import ProfileRegistry, load_profile


def write(folder, name, text):
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_user_profile_extends_a_builtin_one(tmp_path):
    write(tmp_path, "t4-edge", """
        name: t4-edge
        extends: t4
        batch: {max_batch_size: 8, preferred_batch_sizes: [4, 8]}
        price_per_hour_usd: 0.35
    """)
    p = load_profile("t4-edge", profiles_dirs=[tmp_path])
    assert p.batch.max_batch_size == 8 and p.memory_gb == 16 and p.price_per_hour_usd == 0.35
    assert p.batch.max_batch_delay == 0.002  # inherited from _datacenter


def test_kubernetes_section_is_inherited_and_overridable(tmp_path):
    write(tmp_path, "t4-big", "name: t4-big\nextends: t4\nkubernetes: {cpu: 6, node_selector: {pool: infer}}\n")
    p = load_profile("t4-big", profiles_dirs=[tmp_path])
    assert p.kubernetes.cpu == 6 and p.kubernetes.memory_gb == 6  # memory from _datacenter
    assert p.kubernetes.gpu_resource == "nvidia.com/gpu" and dict(p.kubernetes.node_selector) == {"pool": "infer"}
    assert load_profile("cpu").kubernetes.gpu_resource is None


def test_env_path_is_searched(tmp_path, monkeypatch):
    write(tmp_path, "mybox", "name: mybox\nextends: cpu\n")
    monkeypatch.setenv("XINFER_PROFILES_PATH", str(tmp_path))
    assert load_profile("mybox").kind == "cpu"


def test_set_overrides_one_field():
    p = load_profile("t4", overrides=["batch.max_batch_size=16", "batch.max_batch_delay=5ms"])
    assert p.batch.max_batch_size == 16 and p.batch.max_batch_delay == pytest.approx(0.005)


@pytest.mark.parametrize("override, message", [
    ("batch.max_batch_size=lots", r"batch.max_batch_size: expected an integer"),
    ("batch.colour=red", r"batch.colour: unknown field"),
    ("nonsense", r"expected FIELD.PATH=VALUE"),
])
def test_bad_override_names_the_field(override, message):
    with pytest.raises(ProfileError, match=message):
        load_profile("t4", overrides=[override])


@pytest.mark.parametrize("body, field, expected", [
    ("name: bad\nextends: t4\nmemory_gb: lots\n", "memory_gb", "expected a number"),
    ("name: bad\nextends: t4\nbatch: {max_batch_size: 0}\n", "batch.max_batch_size", ">= 1"),
    ("name: bad\nextends: t4\ncolour: red\n", "colour", "unknown field"),
    ("name: bad\nextends: nope\n", "extends", "unknown parent profile 'nope'"),
    ("name: bad\nkind: gpu\nprecisions: [fp16]\ndefault_precision: fp16\nbackends: [onnxruntime]\n"
     "peak_tflops: {fp32: 1, tf32: null, fp16: 2, bf16: null, int8: null, fp8: null}\n", "compute_capability",
     "missing figure"),
    ("name: bad\nextends: t4\npeak_tflops: {fp16: 65}\n", "peak_tflops", ""),
    ("name: other\nextends: t4\n", "name", "must equal the file name"),
    ("name: bad\nextends: t4\nprecisions: [fp17]\n", "precisions[0]", "one of"),
    ("name: bad\nextends: t4\nkubernetes: {cpu: many}\n", "kubernetes.cpu", "CPU cores"),
    ("name: bad\nextends: t4\nkubernetes: {gpus: 2}\n", "kubernetes.gpus", "unknown field"),
    ("name: bad\n  extends: t4\n", None, "not valid YAML"),
])
def test_broken_profile_is_one_line_naming_file_field_and_expectation(tmp_path, body, field, expected):
    path = write(tmp_path, "bad", body)
    with pytest.raises(ProfileError) as info:
        ProfileRegistry([tmp_path]).validate_file(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(path) in msg
    if field:
        assert field in msg
    assert expected in msg


def test_missing_peak_key_is_reported_after_merge(tmp_path):
    # a partial peak table on a fresh (non-inheriting) profile lacks required keys
    path = write(tmp_path, "bad", "name: bad\nkind: cpu\nprecisions: [fp32]\ndefault_precision: fp32\n"
                                  "backends: [onnxruntime]\npeak_tflops: {fp32: 1}\n")
    with pytest.raises(ProfileError, match=r"peak_tflops.tf32: missing required field"):
        ProfileRegistry([tmp_path]).validate_file(path)


def test_cycle_in_extends_is_refused(tmp_path):
    write(tmp_path, "a", "name: a\nextends: b\n")
    write(tmp_path, "b", "name: b\nextends: a\n")
    with pytest.raises(ProfileError, match=r"cycle in extends: a -> b -> a"):
        load_profile("a", profiles_dirs=[tmp_path])


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ProfileError, match=r"unknown profile 'z80'.*t4"):
        load_profile("z80")


def test_missing_profiles_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ProfileError, match="profiles folder does not exist"):
        ProfileRegistry([tmp_path / "nope"])
