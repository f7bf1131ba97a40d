"""The serve / curl / tritonclient examples in README.md and docs/serving.md use the model the docs build
(`make demo`'s digits: model `digits`, input `input` FP32 [batch, 64], output `logits`), so the first copy-paste
answers instead of 404; and the gRPC auth example uses lowercase metadata, which gRPC requires."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DEMO = ROOT / "examples" / "demo.py"


def _serve_section(name: str) -> str:
    text = (ROOT / name).read_text()
    if name == "README.md":
        start = text.index("## Serve and benchmark")
        return text[start:text.index("\n## ", start + 1)]
    return text


def test_the_demo_builds_what_the_docs_serve():
    demo = DEMO.read_text()
    assert 'default="out/demo"' in demo and '"digits.xinfer"' in demo and '"--name", "digits"' in demo
    assert '["input"], ["logits"]' in (ROOT / "examples" / "models.py").read_text()


@pytest.mark.parametrize("doc", ["README.md", "docs/serving.md"])
def test_serve_examples_name_a_model_the_docs_build(doc):
    text = _serve_section(doc)
    served = set(re.findall(r"xinfer-sdk serve[^\n]*?\b(\w+)=\S*digits\.xinfer", text)) | {"digits"}
    for path in re.findall(r"xinfer-sdk serve (?:\w+=)?(\S+\.xinfer)", text):
        assert path == "out/demo/digits.xinfer", f"{doc}: serves {path}, which nothing in the docs builds"
    used = re.findall(r"/v2/models/(\w+)/infer", text) + re.findall(r"--model (\w+)", text) + \
        re.findall(r"\.infer\(\"(\w+)\"", text)
    assert used, f"{doc}: no serve example found"
    assert set(used) <= served, f"{doc}: examples call {sorted(set(used) - served)}, which no example serves"
    flat = " ".join(text.split())
    assert not re.search(r'"name":\s*"input"[^}]*"shape":\s*\[1,\s*(?!64\b)\d+\]', flat), \
        f"{doc}: a JSON input shape that is not [1, 64]"
    assert not re.search(r'InferInput\("input", \[1, (?!64\b)\d+\]', text), f"{doc}: an InferInput that is not [1, 64]"
    for name in re.findall(r"as_numpy\(\"(\w+)\"\)", text) + re.findall(r'"outputs":\[\{"name":"(\w+)"', text):
        assert name == "logits", f"{doc}: output {name!r}; the digits model's output is 'logits'"


def test_grpc_auth_example_uses_lowercase_metadata():
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    found = 0
    for path in docs:
        text = " ".join(path.read_text().split())  # examples wrap across lines
        for m in re.finditer(r"tritonclient\.grpc[^.;]{0,40}?headers=\{\"([^\"]+)\"", text):
            found += 1
            assert m.group(1) == m.group(1).lower(), f"{path.name}: gRPC metadata key {m.group(1)!r} must be lowercase"
    assert found, "the docs show how to pass the API key with tritonclient.grpc"
