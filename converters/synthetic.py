"""Synthetic inputs for the accuracy gate when no ``--eval`` / ``--calib`` is given: random, but shaped and scaled
like what the model takes.

- an image input (``[N, C, H, W]`` / ``[N, H, W, C]``, 1, 3 or 4 channels) whose height and width are dynamic is
  made at 224x224 (``xinfer_sdk.shapes.IMAGE_SIDE``), and the data source says so;
- an audio model (a float ``[N, samples]`` input next to a scalar integer sample rate named ``sr``,
  ``sample_rate`` or ``sampling_rate``, as Silero VAD takes) gets 16 kHz chunks of 512 samples of tones and
  noise in [-1, 1], and the sample rate 16000;
- an input without a batch axis in a batched model (``TensorSpec.batch_axis`` None) is one value for all samples;
- other floats ~ N(0, 1); integers 0/1 (valid as token ids and masks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from xinfer_sdk.bundle import TensorSpec
from xinfer_sdk.errors import CalibrationError, UserError
from xinfer_sdk.shapes import ShapeRange, concrete_dims, image_axes, shapes_hint

from .calibration import Dataset

SAMPLE_RATE_NAMES = ("sr", "sample_rate", "sampling_rate")
AUDIO_RATE = 16000
AUDIO_CHUNK = 512  # samples per chunk at 16 kHz (Silero VAD's window)


def audio_inputs(inputs: Sequence[TensorSpec], *, batched: bool) -> tuple[str | None, str | None]:
    """(the audio input, the sample-rate input) of an audio model, else (None, None)."""
    rate = next((s for s in inputs if s.name.lower() in SAMPLE_RATE_NAMES and len(s.shape) <= 1
                 and np.dtype(s.dtype).kind in "iu"), None)
    if rate is None:
        return None, None
    audio = [s for s in inputs if np.dtype(s.dtype).kind == "f" and len(s.shape) == (2 if batched else 1)
             and s.shape[-1] < 0 and (not batched or s.batch_axis == 0)]
    return (audio[0].name, rate.name) if len(audio) == 1 else (None, None)


def _audio(rng: np.random.RandomState, count: int, samples: int) -> np.ndarray:
    t = np.arange(samples) / AUDIO_RATE
    freq = rng.uniform(80, 3000, size=(count, 3, 1))
    tones = np.sum(np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi, size=(count, 3, 1))), axis=1) / 3
    speech = rng.rand(count, 1) < 0.5  # half the chunks carry tones, all carry noise
    x = 0.3 * tones * speech + 0.02 * rng.randn(count, samples)
    return np.clip(x, -1, 1)


def synthetic(inputs: Sequence[TensorSpec], *, count: int, shapes: Mapping[str, Any], batched: bool,
              example: Mapping[str, np.ndarray] | None = None, seed: int = 0) -> Dataset:
    rng = np.random.RandomState(seed)
    chunk: dict[str, np.ndarray] = {}
    constants: dict[str, np.ndarray] = {}
    params: dict[str, int] = {}
    notes: list[str] = []  # what was made up beyond --shapes
    audio, rate = audio_inputs(inputs, batched=batched)
    shapes = dict(shapes)
    if audio is not None and audio not in shapes and not (example and audio in example):
        shapes[audio] = ShapeRange.fixed((1, AUDIO_CHUNK) if batched else (AUDIO_CHUNK,))
        notes.append(f"{audio}: {AUDIO_CHUNK}-sample chunks of tones and noise at {rate}={AUDIO_RATE}")
    for spec in inputs:
        if spec.name == rate:
            value = np.full(spec.shape, AUDIO_RATE, dtype=spec.dtype)
            (constants if batched and spec.batch_axis is None else chunk)[spec.name] = value
            continue
        try:
            dims = concrete_dims(spec, batch=count, shapes=shapes, batched=batched, example=example, labels=params,
                                 image_default=True)
        except UserError as exc:
            raise CalibrationError(f"{exc.message} to make calibration data",
                                   hint=f"pass --eval DATA or {shapes_hint(spec, batched=batched)}") from None
        axes = image_axes(spec, batched=batched)
        if axes and spec.name not in shapes and not (example and spec.name in example):
            notes.append(f"{spec.name} at {dims[axes[0]]}x{dims[axes[1]]}: dynamic image sides, default size; "
                         "--shapes sets them")
        one = batched and spec.batch_axis is None
        if not batched:
            dims = [count, *dims]
        arr = _random(rng, spec, dims, audio=spec.name == audio)
        if one:
            constants[spec.name] = arr
        elif batched and spec.batch_axis:
            chunk[spec.name] = np.moveaxis(arr, spec.batch_axis, 0)
        else:
            chunk[spec.name] = arr
    what = f"{count} synthetic samples" + (f" ({'; '.join(notes)})" if notes else "")
    axes = {s.name: s.batch_axis for s in inputs if batched and s.batch_axis}
    return Dataset([chunk], [None], {"what": what, "kind": "synthetic"}, batched, axes, constants)


def _random(rng: np.random.RandomState, spec: TensorSpec, dims: Sequence[int], *, audio: bool) -> np.ndarray:
    kind = np.dtype(spec.dtype).kind
    if audio:
        return _audio(rng, dims[0], dims[-1]).reshape(dims).astype(spec.dtype)
    if kind == "f":
        return rng.randn(*dims).astype(spec.dtype)
    if kind == "b":
        return rng.randint(0, 2, size=dims).astype(bool)
    return rng.randint(0, 2, size=dims).astype(spec.dtype)
