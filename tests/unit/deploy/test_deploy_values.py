"""One source, two outputs: a Ref resolves to its value in the plain manifest and to the Go-template expression
that reads it back in the chart; rendering the chart with its values.yaml gives the plain manifest."""

from __future__ import annotations

import pytest
import yaml
from helm_render import merge, render

from xinfer_sdk.deploy.values import Values, config_hash, helm_template, resolve


def sample(v: Values) -> dict:
    v.flag("autoscaling.enabled", True)
    return {
        "kind": "Thing",
        "spec": {
            "replicas": v.ref("replicas", 3, when="!autoscaling.enabled"),
            "image": v.ref("image", "reg/x:1"),
            "resources": v.ref("resources", {"requests": {"cpu": "2"}}),
            "tolerations": v.ref("tolerations", []),
            "command": ["sleep", v.ref("sleep", "10")],
            "items": [{"port": v.ref("port", 8000), "name": "http"}],
            "config": v.text("cfg", {"server": {"port": 8000}, "models": [{"name": "m"}]}),
            "hash": v.hash_of("cfg"),
        },
    }


def test_plain_manifest_has_the_values_and_drops_disabled_keys():
    v = Values()
    obj = resolve(sample(v), v)
    spec = obj["spec"]
    assert "replicas" not in spec  # the HPA owns replicas while autoscaling is on
    assert spec["image"] == "reg/x:1" and spec["command"] == ["sleep", "10"] and spec["items"][0]["port"] == 8000
    assert yaml.safe_load(spec["config"]) == {"server": {"port": 8000}, "models": [{"name": "m"}]}
    assert spec["hash"] == config_hash(v.get("cfg"))
    v.tree["autoscaling"]["enabled"] = False
    assert resolve(sample(Values()), v)["spec"]["replicas"] == 3


def test_values_tree_collects_every_ref():
    v = Values()
    sample(v)
    assert v.tree == {"autoscaling": {"enabled": True}, "replicas": 3, "image": "reg/x:1",
                      "resources": {"requests": {"cpu": "2"}}, "tolerations": [], "sleep": "10", "port": 8000,
                      "cfg": {"server": {"port": 8000}, "models": [{"name": "m"}]}}


def test_template_uses_helm_idioms():
    v = Values()
    t = helm_template(sample(v))
    assert "image: {{ .Values.image | quote }}" in t
    assert "resources:\n{{- toYaml .Values.resources | nindent 4 }}" in t
    assert "{{- if not .Values.autoscaling.enabled }}\n  replicas: {{ .Values.replicas }}\n{{- end }}" in t
    assert "- {{ .Values.port }}" not in t and "port: {{ .Values.port }}" in t
    assert "config: |\n{{- toYaml .Values.cfg | nindent 4 }}" in t
    assert "__XREF" not in t


@pytest.mark.parametrize("override", [{}, {"autoscaling": {"enabled": False}}, {"replicas": 7, "image": "other:2"},
                                      {"resources": {"requests": {"cpu": "4"}, "limits": {"cpu": "4"}}}])
def test_rendered_chart_equals_plain_manifest(override):
    v = Values()
    obj = sample(v)
    values = merge(v.tree, override)
    rendered = yaml.safe_load(render(helm_template(obj), values))
    v.tree = values
    plain = resolve(obj, v)
    for doc in (rendered, plain):  # the hash differs by design (Go's toYaml vs PyYAML); compare the rest
        assert len(doc["spec"].pop("hash")) == 64
    assert yaml.safe_load(rendered["spec"].pop("config")) == yaml.safe_load(plain["spec"].pop("config"))
    assert rendered == plain


def test_document_condition_wraps_the_whole_file():
    v = Values()
    v.flag("monitor.enabled", False)
    t = helm_template({"kind": "ServiceMonitor", "spec": {"a": 1}}, when="monitor.enabled")
    assert render(t, v.tree).strip() == ""
    assert yaml.safe_load(render(t, {"monitor": {"enabled": True}})) == {"kind": "ServiceMonitor", "spec": {"a": 1}}


def test_a_ref_inside_a_longer_string_is_refused():
    v = Values()
    with pytest.raises(TypeError, match="whole YAML value"):
        helm_template({"arg": f"--x={v.ref('x', 'y')}"})  # a Ref formatted into text cannot be read back


def test_values_schema_types():
    v = Values()
    sample(v)
    s = v.schema()["properties"]
    assert s["port"] == {"type": "integer"} and s["image"] == {"type": "string"}
    assert s["autoscaling"]["properties"]["enabled"] == {"type": "boolean"}
    assert s["tolerations"] == {"type": "array"}
    assert s["resources"] == {"type": "object"}  # free inside: --set resources.requests.cpu=4 must pass
    assert s["sleep"] == {"type": ["string", "number"]}  # '10' from the generator, 10 from --set
