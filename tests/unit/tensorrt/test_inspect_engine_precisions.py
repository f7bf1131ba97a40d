"""`xinfer-sdk inspect` shows each engine's layer precisions, read from the manifest (no GPU needed)."""

from __future__ import annotations

from xinfer_sdk.converters import engine_check

from xinfer_sdk.bundle import open_bundle, register, save_manifest

LAYERS = engine_check.summarize(
    '{"Layers": [{"Name": "conv", "LayerType": "CaskConvolution", "ParameterType": "Convolution", '
    '"Inputs": [{"Name": "x", "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}], '
    '"Outputs": [{"Name": "y", "Format/Datatype": "Row major linear FP16 format"}]}], "Bindings": ["x", "y"]}',
    "fp16")


def test_manifest_and_inspect_show_engine_layer_precisions(bundle, cli_run):
    bundle = bundle(profile="jetson-agx-orin-64gb", max_batch_size=16)
    root = bundle.root
    (root / "engines").mkdir()
    (root / "engines" / "sm87_trt10.3.0_fp16_0123abcd.plan").write_bytes(b"plan")
    register(root, bundle.manifest, "engines/sm87_trt10.3.0_fp16_0123abcd.plan", role="engine",
             meta={"key": "sm87_trt10.3.0_fp16_0123abcd", "layer_precisions": LAYERS})
    save_manifest(root, bundle.manifest)

    again = open_bundle(root).manifest
    assert again.engine_layer_precisions() == {"engines/sm87_trt10.3.0_fp16_0123abcd.plan": LAYERS}
    code, out, err = cli_run("inspect", str(root))
    assert code == 0, err
    text = " ".join(out.split())
    assert ("engine engines/sm87_trt10.3.0_fp16_0123abcd.plan: ok for fp16 · FLOP layers: fp16 1 (100%); 1 layers"
            in text)
    # D5: the plan line says DLA is off and why (a dynamic 1..16..16 batch), not just "off"
    assert "DLA off (DLA needs min = opt = max shapes" in text
