"""The corpus of real models (tests/corpus.py fetches them): builds shared by the module's tests, one per
(model, profile, precision), kept for the session; a build whose gate fails is returned with its report."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
sys.path.insert(0, str(Path(__file__).resolve().parent))


class Builds:
    def __init__(self, root: Path):
        self.root = root
        self.done: dict[tuple, tuple] = {}

    def get(self, model, profile: str, precision: str, **kwargs):
        """(bundle or None, accuracy report, gate error or None) of ``model`` built for profile/precision."""
        from xinfer_sdk.builder import build
        from xinfer_sdk.errors import AccuracyGateError

        key = (model.name, profile, precision, tuple(sorted((k, str(v)) for k, v in kwargs.items())))
        if key not in self.done:
            out = self.root / f"{model.name}-{profile}-{precision}-{len(self.done)}.xinfer"
            try:
                bundle = build(str(model.fetch()), profile, precision, output=out, build_engine=False, **kwargs)
                self.done[key] = (bundle, bundle.manifest.accuracy, None)
            except AccuracyGateError as exc:
                self.done[key] = (None, exc.details.get("accuracy"), exc)
        return self.done[key]


@pytest.fixture(scope="session")
def builds(tmp_path_factory):
    return Builds(tmp_path_factory.mktemp("corpus-builds"))


@pytest.fixture(scope="session")
def calib_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("corpus-data")
