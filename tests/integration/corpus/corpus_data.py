"""Inputs that look like the corpus models' real ones (numpy only): pages of text lines for the OCR detector,
single text lines for the recogniser and the direction classifier, and audio for Silero VAD with the state
its own recurrence produces. Normalised as rapidocr does: (pixel / 255 - 0.5) / 0.5, BGR, NCHW."""

from __future__ import annotations

import numpy as np


def _glyphs(img: np.ndarray, rng: np.random.RandomState, y: int, x0: int, x1: int, height: int) -> None:
    """Dark strokes shaped like a line of characters, from (x0, y) over x0..x1, glyphs `height` pixels tall."""
    x = x0
    ink = rng.randint(0, 60)
    while x < x1 - height:
        w = rng.randint(height // 2, height)
        for _ in range(rng.randint(2, 5)):  # strokes of one glyph
            if rng.rand() < 0.5:  # vertical
                cx = x + rng.randint(0, w)
                img[y:y + height, cx:cx + max(1, height // 8)] = ink
            else:
                cy = y + rng.randint(0, height)
                img[cy:cy + max(1, height // 8), x:x + w] = ink
        x += w + rng.randint(1, height // 3 + 2)
        if rng.rand() < 0.15:  # a space between words
            x += height


def _normalise(gray: np.ndarray) -> np.ndarray:
    rgb = np.repeat(gray[:, None], 3, axis=1).astype(np.float32)
    return (rgb / 255.0 - 0.5) / 0.5


def text_pages(n: int, h: int = 320, w: int = 320, seed: int = 0) -> np.ndarray:
    """[n, 3, h, w] float32: light pages with 2-6 lines of dark glyphs, normalised for DBNet."""
    rng = np.random.RandomState(seed)
    pages = np.empty((n, h, w), np.uint8)
    for i in range(n):
        page = (rng.randint(200, 248) + rng.randint(0, 8, size=(h, w))).astype(np.uint8)  # paper with grain
        y = rng.randint(8, 30)
        while y < h - 40:
            size = rng.randint(12, 28)
            x0 = rng.randint(4, w // 4)
            _glyphs(page, rng, y, x0, rng.randint(w // 2, w - 4), size)
            y += size + rng.randint(10, 30)
        pages[i] = page
    return _normalise(pages)


def text_lines(n: int, h: int = 48, w: int = 320, seed: int = 1, flipped: bool = False) -> np.ndarray:
    """[n, 3, h, w] float32: one line of glyphs each, as the recogniser and classifier get them (upside down with
    ``flipped``)."""
    rng = np.random.RandomState(seed)
    lines = np.full((n, h, w), 0, np.uint8)
    for i in range(n):
        line = np.full((h, w), rng.randint(210, 256), np.uint8)
        size = rng.randint(int(h * 0.5), int(h * 0.8))
        _glyphs(line, rng, (h - size) // 2, 2, rng.randint(w // 2, w), size)
        lines[i] = line[::-1, ::-1] if flipped else line
    return _normalise(lines)


SR = 16000
CHUNK = 512
CONTEXT = 64  # silero-vad's OnnxWrapper prepends the previous chunk's last 64 samples (16 kHz)


def audio_stream(seconds: float, seed: int = 0) -> np.ndarray:
    """Mono float32 at 16 kHz in [-1, 1]: noise with voiced bursts (a pitch and its harmonics, syllable envelope)."""
    rng = np.random.RandomState(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    x = 0.01 * rng.randn(n)
    pos = 0
    while pos < n:
        length = int(rng.uniform(0.2, 0.8) * SR)
        if rng.rand() < 0.6:
            seg = slice(pos, min(n, pos + length))
            f0 = rng.uniform(100, 250)
            voice = sum(np.sin(2 * np.pi * f0 * k * t[seg]) / k for k in range(1, 6))
            env = np.sin(np.pi * np.linspace(0, 1, seg.stop - seg.start)) ** 2 * (1 + 0.5 * np.sin(2 * np.pi * 4 * t[seg]))
            x[seg] += 0.3 * voice * env
        pos += length + int(rng.uniform(0.1, 0.5) * SR)
    return np.clip(x, -1, 1).astype(np.float32)


def silero_chunks(model_path, streams: int = 4, seconds: float = 2.0) -> dict[str, np.ndarray]:
    """Calibration / evaluation records for silero_vad.onnx: each 576-sample window (context + chunk) of a few
    audio streams with the state the model itself carried into it; ``sr`` once (it has no batch axis)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    inputs, states = [], []
    for s in range(streams):
        audio = audio_stream(seconds, seed=s)
        state = np.zeros((2, 1, 128), np.float32)
        context = np.zeros(CONTEXT, np.float32)
        for i in range(0, len(audio) - CHUNK + 1, CHUNK):
            window = np.concatenate([context, audio[i:i + CHUNK]])[None]
            inputs.append(window[0])
            states.append(state[:, 0])
            _, state = sess.run(None, {"input": window, "state": state, "sr": np.array(SR, np.int64)})
            context = window[0, -CONTEXT:]
    return {"input": np.stack(inputs), "state": np.stack(states, axis=1), "sr": np.array(SR, np.int64)}
