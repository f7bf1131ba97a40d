"""What to serve: bundles from the command line (``[NAME=]PATH``) and/or a ``config.yaml``.

A config.yaml is either the seed's batch-policy file (``batch_size``, ``max_batch_delay``, ``max_workers``,
... at the top level or under ``batch:``), applied to every model, or a server file::

    server:                      # command-line options win over these
      host: 127.0.0.1
      port: 8000
      grpc_port: 8001            # null = no gRPC
      metrics_port: null         # e.g. 8002: health + /metrics on their own port (default: on the HTTP port)
      grpc_max_connection_age: null  # e.g. 2m: GOAWAY older connections so clients reach new replicas
      grpc_impl: native          # or grpcio (grpc.aio, the fallback)
      drain_timeout: 30s
      max_body: 64MiB
      api_key_env: XINFER_API_KEY
      header_timeout: 10s        # network limits (docs/security.md): request headers must arrive within this
      body_timeout: 30s          #   a request body / gRPC message must arrive within this
      keepalive_timeout: 15s     #   an idle HTTP/1.1 keep-alive connection is closed after this
      idle_timeout: 30s          #   an HTTP/2 connection with no open call gets GOAWAY after this
      max_connections: 4096      #   per port
      max_buffered: 1GiB         #   request bytes held by all connections together
      drain_delay: 0s            # on SIGTERM, keep serving this long with readiness false before refusing work
      model_control: none        # none | poll | explicit (docs/repository.md)
      poll_interval: 5s          #   poll: how often the repository is re-read
      load_model: []             #   explicit: models loaded at start ('*' = all)
      reject_nonfinite: false    # true: NaN/Inf in float inputs are refused (400 naming the input)
      trace_otlp: null           # e.g. http://127.0.0.1:4318: OpenTelemetry traces of requests (OTLP/HTTP)
      trace_rate: 1.0            #   fraction of new traces sampled
    repository: models/          # a model repository folder (or a list of them): NAME/ or NAME/<version>/
    defaults:                    # for every model below, in the repository (and on the command line)
      profile: auto
      device: cpu                # or cuda:0,1,2,3 / all: device_concurrency workers on each device
      batch: {max_batch_size: 32, max_batch_delay: 1ms}
      version_policy: {latest: 1}  # repository models: latest N, all, or {specific: [1, 3]}
    models:
      - {name: mlp, path: mlp.xinfer}
      - {name: resnet, path: resnet.xinfer, threads: 2, batch: {max_batch_size: 16}}

Paths in the file are relative to the file's folder. A path (here or on the command line) that is a folder
holding neither a bundle nor a model file is a model repository.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._yamlfile import read_mapping
from ..errors import UserError
from ..policy import SEED_ALIASES, BatchPolicy, parse_duration
from ..runtime.backends.base import normalize_device
from ..runtime.keys import check_keys, check_options, did_you_mean
from .limits import DURATION_KEYS, LIMIT_KEYS, SIZE_KEYS

_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmMgG]i?[bB]?|[bB])?\s*$")
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "ki": 1024, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mi": 1024**2,
          "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gi": 1024**3, "gib": 1024**3}
_MODEL_KEYS = {"name", "path", "profile", "device", "backend", "threads", "batch", "options", "sequence"}
_SERVER_KEYS = {"host", "port", "grpc_port", "metrics_port", "grpc_max_connection_age", "grpc_impl", "drain_timeout",
                "max_body", "api_key_env", "model_control", "poll_interval", "load_model", "reject_nonfinite",
                "allow_nonfinite", "trace_otlp", "trace_rate", *LIMIT_KEYS}
_DEFAULT_KEYS = (_MODEL_KEYS - {"name", "path", "sequence"}) | {"version_policy"}
_TOP_KEYS = ("models", "server", "defaults", "repository")
_GRPC_IMPLS = ("native", "grpcio")
_BATCH_KEYS = set(BatchPolicy.__dataclass_fields__) | set(SEED_ALIASES)
#: value types of the scalar keys: (check, what the error says was expected)
_PORT = (lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 65535, "a port number 0-65535")
_OPT_PORT = (lambda v: v is None or _PORT[0](v), "a port number 0-65535 or null")
_TEXT = (lambda v: isinstance(v, str) and v != "", "text")
_OPT_TEXT = (lambda v: v is None or _TEXT[0](v), "text or null")
_TYPES = {
    "server": {"host": _TEXT, "port": _PORT, "grpc_port": _OPT_PORT, "metrics_port": _OPT_PORT,
               "api_key_env": _OPT_TEXT, "trace_otlp": _OPT_TEXT,
               "model_control": (lambda v: v in ("none", "poll", "explicit"), "none, poll or explicit"),
               "reject_nonfinite": (lambda v: isinstance(v, bool), "true or false"),
               "allow_nonfinite": (lambda v: isinstance(v, bool), "true or false"),
               "trace_rate": (lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)
                                                      and 0 <= v <= 1), "a fraction 0..1"),
               "load_model": (lambda v: isinstance(v, str) or (isinstance(v, list) and all(
                   isinstance(x, str) for x in v)), "a model name or a list of names"),
               "max_connections": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                                   "a whole number >= 1")},
    "model": {"name": _OPT_TEXT, "profile": _OPT_TEXT, "device": _OPT_TEXT, "backend": _OPT_TEXT,
              "threads": (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
                          "a whole number >= 1 or null")},
}


def _check_types(data: Mapping[str, Any], kind: str, where: str) -> None:
    """A wrong type is one line naming the key and the expected type (not a crash later on)."""
    for key, (ok, expected) in _TYPES[kind].items():
        if key in data and not ok(data[key]):
            raise UserError(f"{where}.{key}: expected {expected}, got {data[key]!r}")
    if data.get("device") is not None:
        try:
            check_device(data["device"])
        except UserError as exc:
            raise UserError(f"{where}.device: {exc.message}") from None
    if "batch" in data:
        check_keys(_mapping(data["batch"], f"{where}.batch"), _BATCH_KEYS, f"{where}.batch")
    if data.get("options") is not None:
        options = _mapping(data["options"], f"{where}.options")
        try:
            check_options(options, data.get("backend") or "auto")
        except UserError as exc:
            raise UserError(f"{where}.{exc.message}") from None


def check_device(device: str) -> str:
    """One device ('cpu', 'cuda:1'), several ('cuda:0,1,2,3', 'cuda:0,cuda:1', 'cpu:0,cpu:1' for tests) or
    'all'. A single device comes back in its one spelling; a list is checked item by item and passed on as
    written (the loader places the workers); 'all' is resolved when the model loads."""
    text = str(device).strip()
    if text.lower() == "all":
        return "all"
    if "," not in text:
        return normalize_device(text)
    from ..runtime.devices import parse_devices

    parse_devices(text)
    return text


def parse_size(value: Any, *, field: str = "size") -> int:
    """'64MiB' / '10MB' / '512k' / 1048576 -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])
    raise UserError(f"{field}: expected a size like '64MiB', '10MB' or a number of bytes, got {value!r}")


@dataclasses.dataclass
class ModelEntry:
    path: str
    name: str | None = None
    profile: str | None = None
    device: str | None = None
    backend: str | None = None
    threads: int | None = None
    batch: dict[str, Any] = dataclasses.field(default_factory=dict)
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    policy_file: str | None = None  # a seed-style batch config.yaml
    sequence: Any = None  # a stateful model's state declaration (docs/sequences.md), or False to switch it off


@dataclasses.dataclass
class ServeConfig:
    models: list[ModelEntry]
    server: dict[str, Any]
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)


def parse_model_arg(arg: str) -> ModelEntry:
    """``PATH`` or ``NAME=PATH`` from the command line."""
    name, sep, path = arg.partition("=")
    if sep and name and "/" not in name and not os.path.exists(arg):
        return ModelEntry(path=path, name=name)
    return ModelEntry(path=arg)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UserError(f"{where}: expected a mapping, got {type(value).__name__}")
    return dict(value)


def read_serve_config(path: str | os.PathLike[str] | None, cli_models: Sequence[str] = ()) -> ServeConfig:
    entries = [parse_model_arg(a) for a in cli_models]
    if path is None:
        if not entries:
            raise UserError("nothing to serve: give one or more BUNDLE paths or a --config file with 'models:'")
        return ServeConfig(entries, {})
    p = Path(path)
    data = read_mapping(p)
    if not any(k in data for k in _TOP_KEYS):
        # the seed's batch-policy config.yaml: applies to every model given on the command line
        section = _mapping(data.get("batch", data.get("batching", data)), f"{p}: batch")
        for key in section:
            if key not in _BATCH_KEYS:  # a batch-policy typo, or a misspelt server-file section
                hint = did_you_mean(key, _BATCH_KEYS | {"models", "server", "defaults"})
                raise UserError(f"{p}: {key}: unknown key{hint} (a server file has server, defaults, models; a "
                                f"batch-policy file has {', '.join(sorted(_BATCH_KEYS))})")
        if not entries:
            raise UserError(f"{p}: holds only batch-policy keys; give the BUNDLE paths on the command line")
        for e in entries:
            e.policy_file = str(p)
        return ServeConfig(entries, {})
    for key in data:
        if key not in _TOP_KEYS:
            raise UserError(f"{p}: unknown top-level key {key!r}{did_you_mean(key, _TOP_KEYS)}"
                            " (expected server, defaults, models, repository)")
    server = _mapping(data.get("server"), f"{p}: server")
    check_keys(server, _SERVER_KEYS, f"{p}: server")
    _check_types(server, "server", f"{p}: server")
    if "grpc_impl" in server and server["grpc_impl"] not in _GRPC_IMPLS:
        raise UserError(f"{p}: server.grpc_impl: expected one of {', '.join(_GRPC_IMPLS)}, got {server['grpc_impl']!r}")
    defaults = _mapping(data.get("defaults"), f"{p}: defaults")
    check_keys(defaults, _DEFAULT_KEYS, f"{p}: defaults")
    _check_types(defaults, "model", f"{p}: defaults")
    models = data.get("models") or []
    if isinstance(models, Mapping):  # {name: path or {path: ...}}
        models = [dict(v, name=k) if isinstance(v, Mapping) else {"name": k, "path": v} for k, v in models.items()]
    if not isinstance(models, list):
        raise UserError(f"{p}: models: expected a list of {{name, path, ...}}")
    base = p.parent
    for i, m in enumerate(models):
        m = _mapping(m, f"{p}: models[{i}]")
        check_keys(m, _MODEL_KEYS, f"{p}: models[{i}]")
        _check_types(m, "model", f"{p}: models[{i}]")
        if not isinstance(m.get("path"), str):
            raise UserError(f"{p}: models[{i}].path: required (a bundle folder or model file)")
        mp = Path(m["path"])
        entries.append(ModelEntry(path=str(mp if mp.is_absolute() else base / mp), name=m.get("name"),
                                  profile=m.get("profile"), device=m.get("device"), backend=m.get("backend"),
                                  threads=m.get("threads"), batch=_mapping(m.get("batch"), f"models[{i}].batch"),
                                  options=_mapping(m.get("options"), f"models[{i}].options"),
                                  sequence=m.get("sequence")))
    for e in entries:
        for k in ("profile", "device", "backend", "threads"):
            if getattr(e, k) is None and k in defaults:
                setattr(e, k, defaults[k])
        e.batch = {**_mapping(defaults.get("batch"), "defaults.batch"), **e.batch}
        e.options = {**_mapping(defaults.get("options"), "defaults.options"), **e.options}
        if e.device is not None:  # what the config reports is the device that runs
            e.device = check_device(e.device)
    repos = data.get("repository")
    repos = [repos] if isinstance(repos, str) else repos
    if repos is not None and not (isinstance(repos, list) and all(isinstance(r, str) for r in repos)):
        raise UserError(f"{p}: repository: expected a folder or a list of folders, got {data['repository']!r}")
    for r in repos or []:
        rp = Path(r)
        entries.append(ModelEntry(path=str(rp if rp.is_absolute() else base / rp)))
    if not entries:
        raise UserError(f"{p}: no models to serve (add a 'models:' list, a 'repository:' folder or BUNDLE paths)")
    if "drain_timeout" in server:
        server["drain_timeout"] = parse_duration(server["drain_timeout"], field="server.drain_timeout")
    if server.get("grpc_max_connection_age") is not None:
        server["grpc_max_connection_age"] = parse_duration(server["grpc_max_connection_age"],
                                                           field="server.grpc_max_connection_age")
    if "max_body" in server:
        server["max_body"] = parse_size(server["max_body"], field="server.max_body")
    for key in DURATION_KEYS:
        if key in server:
            server[key] = parse_duration(server[key], field=f"server.{key}")
    for key in SIZE_KEYS:
        if key in server:
            server[key] = parse_size(server[key], field=f"server.{key}")
    if "poll_interval" in server:
        server["poll_interval"] = parse_duration(server["poll_interval"], field="server.poll_interval")
    if isinstance(server.get("load_model"), str):
        server["load_model"] = [server["load_model"]]
    return ServeConfig(entries, server, defaults)


def build_control(cfg: ServeConfig, *, mode: str = "none", poll_interval: float | None = None,
                  load_names: Sequence[str] = (), profile: str | None = None, device: str | None = None,
                  backend: str | None = None, threads: int | None = None, profiles_dirs: Sequence[str] = (),
                  overrides: Sequence[str] = ()) -> Any:
    """The ``ModelControl`` of ``serve``: entries that are repository folders become roots, the others models
    of their own (version 1). Command-line values win over the file's."""
    from ..bundle import is_bundle, open_bundle
    from .control import DEFAULT_POLL_INTERVAL, ModelControl
    from .repository import RepoModel, is_repository

    roots, fixed = [], []
    for e in cfg.models:
        p = Path(e.path)
        if e.name is None and is_repository(p):
            roots.append(p)
            continue
        name = e.name
        if name is None:
            name = open_bundle(p, verify=False).name if is_bundle(p) else p.stem
        settings = {k: getattr(e, k) for k in ("profile", "device", "backend", "threads") if getattr(e, k) is not None}
        if e.batch:
            settings["batch"] = dict(e.batch)
        if e.options:
            settings["options"] = dict(e.options)
        if e.sequence is not None:
            settings["sequence"] = e.sequence
        if any(m.name == name for m in fixed):
            raise UserError(f"two models are named {name!r}; give one another name (NAME=PATH)")
        fixed.append(RepoModel(name, {1: p}, settings, policy_file=e.policy_file))
    cli = {"profile": profile, "device": check_device(device) if device else None, "backend": backend,
           "threads": threads}
    return ModelControl(roots=roots, models=fixed, mode=mode, load_names=load_names, settings=cli,
                        poll_interval=poll_interval if poll_interval is not None else DEFAULT_POLL_INTERVAL,
                        profiles_dirs=profiles_dirs, overrides=overrides, defaults=cfg.defaults)
