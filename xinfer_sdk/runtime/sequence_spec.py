"""The state declaration of a stateful model and the sequence parameters of a request (see ``sequence.py``).

``resolve`` reads config.yaml's ``sequence:``, else the bundle manifest's ``extra['sequence']``, else finds the
state pairs by name (``detect``); ``sequence_params`` reads ``sequence_id`` / ``sequence_start`` /
``sequence_end`` as tritonclient sends them (HTTP JSON values, or gRPC InferParameter dicts).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..bundle import TensorSpec
from ..errors import InvalidInput, UserError

#: (state input, state output) name patterns of the auto-detection
_PAIRS = [(re.compile(r"(?i)(.*state\d*)$"), [r"\1N", r"\1n", r"\1_out", r"\1_new", r"\1_next"]),
          (re.compile(r"^([hc]\d*)$"), [r"\1n", r"\1N", r"\1_out"]),
          (re.compile(r"(?i)^(.*)_in$"), [r"\1_out"]),
          (re.compile(r"(?i)^(.*)_input$"), [r"\1_output"]),
          (re.compile(r"(?i)^(.*)(?:_prev|_previous)$"), [r"\1_next", r"\1_new"]),
          (re.compile(r"(?i)^in_(.*)$"), [r"out_\1"])]


@dataclasses.dataclass(frozen=True)
class StatePair:
    input: str
    output: str
    axis: int  # the batch axis of the state (requests of different sequences are stacked along it)
    shape: tuple[int, ...]  # one sequence's state (batch axis = 1)
    dtype: str


@dataclasses.dataclass(frozen=True)
class SequenceSpec:
    pairs: tuple[StatePair, ...]
    idle_timeout_s: float = 60.0
    max_sequences: int = 1024
    source: str = "detected"

    def to_dict(self) -> dict[str, Any]:
        return {"state": {p.input: p.output for p in self.pairs}, "idle_timeout_s": self.idle_timeout_s,
                "max_sequences": self.max_sequences, "source": self.source,
                "state_axes": {p.input: p.axis for p in self.pairs}}


_KEYS = {"state", "idle_timeout_s", "max_sequences", "state_axes"}


def detect(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> dict[str, str]:
    """{state input: state output} found by name (state/stateN, h/hn, c/cn, x_in/x_out, ...), same dtype and rank."""
    outs = {o.name: o for o in outputs}
    found: dict[str, str] = {}
    for i in inputs:
        if not i.shape:
            continue
        for pat, repls in _PAIRS:
            if not pat.match(i.name):
                continue
            for r in repls:
                name = pat.sub(r, i.name)
                o = outs.get(name)
                if o is not None and o.dtype == i.dtype and len(o.shape) == len(i.shape) and name not in found.values():
                    found[i.name] = name
                    break
            if i.name in found:
                break
    return found


def resolve(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], *, config: Any = None,
            manifest_extra: Mapping[str, Any] | None = None) -> SequenceSpec | None:
    """The model's sequence declaration: config.yaml ``sequence:`` <- manifest ``extra['sequence']`` <- names.

    ``config``: None (not given), False (stateless, even when names look like state) or a mapping."""
    if config is False:
        return None
    section: Mapping[str, Any] | None = None
    source = "detected"
    if isinstance(config, Mapping):
        section, source = config, "config.yaml"
    elif config is not None:
        raise UserError(f"config.yaml 'sequence' must be a mapping or false, got {type(config).__name__}",
                        hint="e.g. sequence: {state: {state: stateN}, idle_timeout_s: 60, max_sequences: 1024}")
    elif manifest_extra and isinstance(manifest_extra.get("sequence"), Mapping):
        section, source = manifest_extra["sequence"], "bundle manifest"
    where = f"{source} sequence"
    if section is not None:
        unknown = sorted(set(section) - _KEYS)
        if unknown:
            raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_KEYS))}")
    state = dict((section or {}).get("state") or {}) if section is not None else {}
    if not state:
        state = detect(inputs, outputs)
        if not state:
            if section is not None:
                raise UserError(f"{where}: no state pairs declared and none found by name",
                                hint="declare them: sequence: {state: {<state input>: <state output>}}")
            return None
    ins = {s.name: s for s in inputs}
    outs = {s.name: s for s in outputs}
    axes = dict((section or {}).get("state_axes") or {})
    pairs = []
    for i_name, o_name in state.items():
        if i_name not in ins:
            raise UserError(f"{where}: state input {i_name!r} is not an input of the model "
                            f"(inputs: {', '.join(ins)})")
        if o_name not in outs:
            raise UserError(f"{where}: state output {o_name!r} is not an output of the model "
                            f"(outputs: {', '.join(outs)})")
        spec, out = ins[i_name], outs[o_name]
        if spec.dtype != out.dtype or len(spec.shape) != len(out.shape):
            raise UserError(f"{where}: state {i_name!r} {spec.dtype}{list(spec.shape)} and {o_name!r} "
                            f"{out.dtype}{list(out.shape)} differ in dtype or rank; a state output must be the next "
                            "value of its input")
        axis = axes.get(i_name)
        if axis is None:
            dyn = [k for k, d in enumerate(spec.shape) if d < 0]
            axis = dyn[0] if len(dyn) == 1 else 0
        if not 0 <= int(axis) < len(spec.shape):
            raise UserError(f"{where}: state_axes[{i_name!r}] = {axis} is outside its shape {list(spec.shape)}")
        axis = int(axis)
        shape = tuple(1 if k == axis else d for k, d in enumerate(spec.shape))
        if any(d < 0 for d in shape):
            raise UserError(f"{where}: state {i_name!r} has shape {list(spec.shape)}: only its batch axis ({axis}) "
                            "may be dynamic, the server has to make its initial zeros",
                            hint="build the bundle with a fixed state shape, or declare state_axes")
        pairs.append(StatePair(i_name, o_name, axis, shape, spec.dtype))
    idle = float((section or {}).get("idle_timeout_s", 60.0))
    most = int((section or {}).get("max_sequences", 1024))
    if idle <= 0 or most <= 0:
        raise UserError(f"{where}: idle_timeout_s and max_sequences must be > 0 (got {idle:g} and {most})")
    return SequenceSpec(tuple(pairs), idle, most, source)


def sequence_params(params: Mapping[str, Any] | None, model: str) -> tuple[Any, bool, bool]:
    """(sequence id, start, end) from the KServe v2 request parameters; InvalidInput when the id is missing."""
    p = params or {}
    sid = p.get("sequence_id")
    if isinstance(sid, Mapping):  # gRPC InferParameter decoded as {'int64_param': 7}
        sid = next(iter(sid.values()), None)
    if isinstance(sid, bool) or sid is None or sid == 0 or sid == "":
        raise InvalidInput(f"model '{model}' is stateful: each request needs the parameter 'sequence_id' (a non-zero "
                           "integer or a non-empty string) naming its sequence",
                           hint="tritonclient: client.infer(..., sequence_id=7, sequence_start=True) on the first "
                                "request of a stream, sequence_end=True on its last")
    if isinstance(sid, float) and sid.is_integer():
        sid = int(sid)
    if not isinstance(sid, (int, str)):
        raise InvalidInput(f"model '{model}': sequence_id must be an integer or a string, got {type(sid).__name__}")

    def flag(key: str) -> bool:
        v = p.get(key, False)
        if isinstance(v, Mapping):
            v = next(iter(v.values()), False)
        if isinstance(v, str):
            return v.lower() in ("1", "true", "yes")
        return bool(v)

    return sid, flag("sequence_start"), flag("sequence_end")
