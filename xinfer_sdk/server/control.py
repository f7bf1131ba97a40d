"""Model control: which models of the repository are served, and loading / reloading / unloading them live.

Modes, as Triton names them (``--model-control``):
  none      every model found at start is served; nothing changes until restart; load/unload are refused
  poll      as none, then the repository is re-read every ``--poll-interval``: new models and versions are
            loaded, changed ones reloaded, removed ones unloaded
  explicit  only ``--load-model NAME`` at start (``*`` = all); then the repository load / unload requests

A (re)load is atomic while traffic flows: the new versions are loaded and warmed beside the old ones, the
name's entry is switched in one step on the event loop (``Service.install``), then the replaced versions stop
intake and are closed once every request they accepted has been answered. A load that fails leaves what was
served untouched. A model that does not fit the device memory budget is refused before it is loaded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ModelNotFound, UserError, XinferError
from . import repository as repo
from .repository import RepoModel, VersionPolicy

log = logging.getLogger(__name__)

MODES = ("none", "poll", "explicit")
DEFAULT_POLL_INTERVAL = 5.0
#: load parameters accepted (Triton's are config / file:*, which xinfer does not take); unload's
LOAD_PARAMS: tuple[str, ...] = ()
UNLOAD_PARAMS = ("unload_dependents",)


@dataclasses.dataclass
class _Loaded:
    path: Path
    signature: tuple
    settings: dict[str, Any]
    devices: tuple[str, ...]
    memory: float  # estimated bytes on each of its devices (0 when not estimated)


class ModelControl:
    """Knows the repository (folders + models named one by one), loads versions, and keeps the ``Service``'s
    served set in step with it. Blocking work (scans, loads, closes) runs in worker threads."""

    def __init__(self, *, roots: Sequence[str | Path] = (), models: Sequence[RepoModel] = (), mode: str = "none",
                 poll_interval: float = DEFAULT_POLL_INTERVAL, load_names: Sequence[str] = (),
                 settings: Mapping[str, Any] | None = None, profiles_dirs: Sequence[str] = (),
                 overrides: Sequence[str] = (), defaults: Mapping[str, Any] | None = None,
                 drain_timeout: float = 30.0):
        if mode not in MODES:
            raise UserError(f"--model-control {mode!r}: expected one of {', '.join(MODES)}")
        if poll_interval <= 0:
            raise UserError(f"--poll-interval must be above 0 seconds, got {poll_interval:g}")
        if load_names and mode != "explicit":
            raise UserError("--load-model only applies with --model-control explicit (the other modes load "
                            "every model of the repository)")
        self.roots = [Path(r) for r in roots]
        self.fixed = {m.name: m for m in models}
        self.mode = mode
        self.poll_interval = float(poll_interval)
        self.load_names = list(load_names)
        self.settings = {k: v for k, v in (settings or {}).items() if v is not None}  # command line wins
        self.profiles_dirs, self.overrides = tuple(profiles_dirs), tuple(overrides)
        defaults = dict(defaults or {})
        self.default_policy = VersionPolicy.parse(defaults.pop("version_policy", None), "defaults.version_policy")
        self.defaults = {k: v for k, v in defaults.items() if v is not None}  # under each model's config.yaml
        self.drain_timeout = drain_timeout
        self.service: Any = None
        self.found: dict[str, RepoModel] = {}
        self.loaded: dict[tuple[str, int], _Loaded] = {}
        self.failed: dict[str, str] = {}  # name -> why its last load failed
        self._failed_at: dict[str, tuple] = {}  # name -> what poll tried (not retried until it changes)
        self.loading: set[str] = set()
        self._lock: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task] = set()
        self._poller: asyncio.Task | None = None
        self._stopped = False

    # -- the repository ----------------------------------------------------------------------------------
    def scan(self) -> dict[str, RepoModel]:
        found: dict[str, RepoModel] = {}
        for root in self.roots:
            for name, m in repo.scan(root, default_policy=self.default_policy).items():
                m.settings = _merge(self.defaults, m.settings)
                if name in found:
                    raise UserError(f"model {name!r} is in two repositories ({found[name].versions} and "
                                    f"{m.versions}); rename one")
                found[name] = m
        for name, m in self.fixed.items():
            if name in found:
                raise UserError(f"model {name!r} is both in the repository and named on its own; rename one "
                                "(NAME=PATH)")
            found[name] = m
        self.found = found
        return found

    def describe_roots(self) -> str:
        return ", ".join(str(r) for r in self.roots) or "the models given"

    # -- loading one version (blocking) ------------------------------------------------------------------
    def _setting(self, m: RepoModel, key: str) -> Any:
        return self.settings.get(key, m.settings.get(key))

    def load_version(self, m: RepoModel, version: int, path: Path) -> tuple[Any, float, _Loaded]:
        from ..runtime.loader import load, resolve_profile

        t0 = time.perf_counter()
        prof = resolve_profile(self._setting(m, "profile") or "auto", profiles_dirs=self.profiles_dirs,
                               overrides=self.overrides)
        batching = m.settings.get("batch") or None
        device = self._setting(m, "device")
        est = self._estimate(m, path, prof, batching)
        devices = _devices(device, prof)
        for dev in devices:  # each device holds device_concurrency workers of the model
            others = {f"{n}:{v}": info.memory for (n, v), info in self.loaded.items()
                      if n != m.name and dev in info.devices and info.memory}
            repo.check_memory(m.name, est, profile_name=prof.name, device=dev, others=others)
        backend = self._setting(m, "backend") or "auto"
        model = load(path, profile=prof, device=device, backend=backend,
                     threads=self._setting(m, "threads"), batching=batching, config=m.policy_file, name=m.name,
                     options=server_options(backend, m.settings.get("options")), sequence=m.settings.get("sequence"))
        model.version = str(version)
        info = _Loaded(path, repo.signature(path), dict(m.settings), devices,
                       float(est["total_bytes"]) if est else 0.0)
        return model, time.perf_counter() - t0, info

    def _estimate(self, m: RepoModel, path: Path, prof: Any, batching: Any) -> dict[str, Any] | None:
        from ..bundle import is_bundle, open_bundle
        from ..policy import BatchPolicy
        from ..runtime.loader import resolve_policy

        try:
            if is_bundle(path):
                pol = resolve_policy(open_bundle(path, verify=False), prof, batching, m.policy_file)
            else:
                pol = BatchPolicy.from_dict(batching, base=prof.batch, source="batch") if batching else prof.batch
        except XinferError:
            return None  # the load itself names what is wrong with the policy
        return repo.memory_need(path, profile=prof, max_batch=pol.max_batch_size, workers=pol.device_concurrency)

    def initial(self, progress: Callable[[int, int, str], None] | None = None) -> tuple[list[Any], dict]:
        """Load what the mode serves at start (blocking, before the server listens); returns the models and
        their load seconds by (name, version). A failure closes what was loaded and raises."""
        found = self.scan()
        if self.mode == "explicit":
            names = list(found) if "*" in self.load_names else self.load_names
            for n in names:
                if n not in found:
                    raise ModelNotFound(f"--load-model {n}: no such model in {self.describe_roots()} (models there: "
                                        f"{', '.join(sorted(found)) or 'none'})")
        else:
            names = list(found)
            if not names:
                raise UserError(f"nothing to serve: no model found in {self.describe_roots()}",
                                hint="a repository holds NAME/ (a bundle or a model file) or NAME/<version>/ "
                                     "folders; see docs/repository.md")
        todo = []
        for n in names:
            sel = found[n].selected()
            if not sel:
                raise UserError(_no_version(found[n]))
            todo += [(found[n], v, p) for v, p in sel.items()]
        models, seconds = [], {}
        try:
            for i, (m, v, p) in enumerate(todo):
                model, secs, info = self.load_version(m, v, p)
                models.append(model)
                seconds[(m.name, str(v))] = secs
                self.loaded[(m.name, v)] = info
                if progress is not None:
                    progress(i + 1, len(todo), f"loaded {m.name} version {v}")
        except BaseException:
            for model in models:
                model.close(drain=False, timeout=5)
            raise
        return models, seconds

    # -- on the server's event loop ----------------------------------------------------------------------
    def attach(self, service: Any) -> None:
        self.service = service
        service.control = self
        for (name, _v), _info in self.loaded.items():
            m = self.found.get(name)
            if m is not None:
                for s in service.versions.get(name, {}).values():
                    s.version_policy = m.policy.to_triton()
                    s.config["version_policy"] = s.version_policy

    def start(self) -> None:
        """Called on the running loop: start polling in poll mode."""
        self._lock = asyncio.Lock()
        if self.mode == "poll":
            self._poller = asyncio.ensure_future(self._poll_forever())

    def stop(self) -> None:
        """No more polls; a load under way finishes and is closed unserved (``wait_idle`` waits for it)."""
        self._stopped = True
        if self._poller is not None and not (self._lock is not None and self._lock.locked()):
            self._poller.cancel()

    def check_mode(self, what: str) -> None:
        from .service import ModelControlDisabled

        if self.mode != "explicit":
            raise ModelControlDisabled(
                f"model {what} is refused: this server runs with --model-control {self.mode}"
                + (" (the repository folder is watched instead: add, change or remove versions there)"
                   if self.mode == "poll" else ""),
                hint="start it with --model-control explicit to load and unload models by request")

    async def load(self, name: str, params: Mapping[str, Any] | None = None) -> None:
        _check_params(params, LOAD_PARAMS, "load")
        async with self._guard():
            loop = asyncio.get_running_loop()
            found = await loop.run_in_executor(None, self.scan)
            await self._load_locked(name, found)

    async def unload(self, name: str, params: Mapping[str, Any] | None = None) -> None:
        _check_params(params, UNLOAD_PARAMS, "unload")
        async with self._guard():
            if name not in self.service.versions:
                raise ModelNotFound(f"model {name!r} is not loaded (loaded: "
                                    f"{', '.join(sorted(self.service.versions)) or 'none'})")
            retired = self._retire(name)
        await self.service.drain(retired, self.drain_timeout)

    def _guard(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def _retire(self, name: str, new: Mapping[str, Any] | None = None) -> list[Any]:
        retired = self.service.install(name, new or {})
        for s in retired:
            self.loaded.pop((name, int(s.version) if s.version.isdigit() else 1), None)
        return retired

    async def _load_locked(self, name: str, found: Mapping[str, RepoModel]) -> None:
        from .service import Served

        m = found.get(name)
        if m is None:
            raise ModelNotFound(f"no model {name!r} in {self.describe_roots()} (models there: "
                                f"{', '.join(sorted(found)) or 'none'})")
        want = m.selected()
        if not want:
            raise UserError(_no_version(m))
        loop = asyncio.get_running_loop()
        current = self.service.versions.get(name, {})
        new: dict[str, Any] = {}
        fresh: list[tuple[int, Any, _Loaded]] = []
        self.loading.add(name)
        try:
            for v, path in want.items():
                sig = await loop.run_in_executor(None, repo.signature, path)
                had, s = self.loaded.get((name, v)), current.get(str(v))
                if s is not None and had is not None and had.path == path and had.signature == sig \
                        and had.settings == m.settings:
                    new[str(v)] = s
                    continue
                model, secs, info = await loop.run_in_executor(None, self.load_version, m, v, path)
                served = Served(model, secs, m.policy.to_triton())
                fresh.append((v, served, info))
                new[str(v)] = served
        except BaseException as exc:
            self.failed[name] = str(exc) if isinstance(exc, XinferError) else f"load failed: {exc!r}"
            for _v, served, _info in fresh:
                await loop.run_in_executor(None, lambda mm=served.model: mm.close(drain=False, timeout=5))
            raise
        finally:
            self.loading.discard(name)
        if self._stopped:  # the server began to drain while we loaded: do not start serving it
            for _v, served, _info in fresh:
                await loop.run_in_executor(None, lambda mm=served.model: mm.close(drain=False, timeout=5))
            return
        retired = self._retire(name, new)
        for v, _served, info in fresh:
            self.loaded[(name, v)] = info
        self.failed.pop(name, None)
        self._failed_at.pop(name, None)
        if fresh or retired:
            log.info("%-28s | serving version(s) %s%s", f"model[{name}]", ", ".join(sorted(new)),
                     f"; retiring {', '.join(s.version for s in retired)}" if retired else "")
        if retired:  # answered and closed in the background; the load is done once the new ones serve
            task = asyncio.ensure_future(self.service.drain(retired, self.drain_timeout))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # -- poll mode ---------------------------------------------------------------------------------------
    async def poll_once(self) -> None:
        """Re-read the repository and bring the served set in step with it."""
        loop = asyncio.get_running_loop()
        async with self._guard():
            try:
                found = await loop.run_in_executor(None, self.scan)
            except XinferError as exc:
                log.warning("%-28s | %s (nothing changed)", "repository", exc)
                return
            for name, m in found.items():
                state = await loop.run_in_executor(None, _state, m)
                if not self._changed(name, m, state):
                    continue
                if self._failed_at.get(name) == state:
                    continue  # failed with exactly these files already: wait for them to change
                try:
                    await self._load_locked(name, found)
                except XinferError as exc:
                    self._failed_at[name] = state
                    log.warning("%-28s | load failed, still serving what was served: %s", f"model[{name}]", exc)
                except Exception:
                    self._failed_at[name] = state
                    log.exception("%-28s | load failed", f"model[{name}]")
            for name in [n for n in self.service.versions if n not in found]:
                log.info("%-28s | gone from the repository: unloading", f"model[{name}]")
                retired = self._retire(name)
                task = asyncio.ensure_future(self.service.drain(retired, self.drain_timeout))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def _changed(self, name: str, m: RepoModel, state: tuple) -> bool:
        served = set(self.service.versions.get(name, {}))
        if served != {str(v) for v, _p, _s in state[:-1]}:
            return True
        for v, path, sig in state[:-1]:
            had = self.loaded.get((name, v))
            if had is None or str(had.path) != path or had.signature != sig or had.settings != m.settings:
                return True
        return False

    async def _poll_forever(self) -> None:
        while not self._stopped:
            await asyncio.sleep(self.poll_interval)
            if self._stopped:
                return
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a poll must never take the server down
                log.exception("%-28s | poll failed", "repository")

    # -- the index ---------------------------------------------------------------------------------------
    def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        svc = self.service
        out: list[dict[str, Any]] = []
        names = sorted(set(self.found) | set(svc.versions) | set(self.failed))
        for name in names:
            served = svc.versions.get(name, {})
            for v in sorted(served, key=lambda x: (int(x) if x.isdigit() else -1, x)):
                s = served[v]
                ok = s.ready
                out.append({"name": name, "version": v, "state": "READY" if ok else "UNAVAILABLE",
                            "reason": "" if ok else "no worker is running (being replaced)"})
            for s in svc._retiring:
                if s.name == name:
                    out.append({"name": name, "version": s.version, "state": "UNLOADING",
                                "reason": "answering the requests it accepted"})
            if name in self.loading:
                out.append({"name": name, "version": "", "state": "LOADING", "reason": ""})
            elif served and name in self.failed:  # the old versions serve on; say why the new ones do not
                out.append({"name": name, "version": "", "state": "UNAVAILABLE",
                            "reason": f"the last load failed, still serving version(s) {', '.join(served)}: "
                                      f"{self.failed[name]}"})
            elif not served:
                why = self.failed.get(name) or ("unloaded" if name in self.found else "removed from the repository")
                out.append({"name": name, "version": "", "state": "UNAVAILABLE", "reason": why})
        return [e for e in out if e["state"] == "READY"] if ready_only else out

    async def wait_idle(self) -> None:
        """Wait for background drains of retired versions (the server's shutdown does this)."""
        pending = [*self._tasks, *([self._poller] if self._poller is not None else [])]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


def _devices(device: Any, prof: Any) -> tuple[str, ...]:
    """The devices a model will run on, for the memory budget (the loader's default when none is given)."""
    if device is None:
        return ("cpu",) if prof.kind == "cpu" else ("rocm:0" if prof.vendor == "amd" else "cuda:0",)
    try:
        from ..runtime.devices import parse_devices

        return tuple(parse_devices(device))
    except XinferError:
        return (str(device),)  # the load names what is wrong with it


def _state(m: RepoModel) -> tuple:
    """What poll compares: (version, path, files signature) of each selected version, then the settings."""
    return tuple((v, str(p), repo.signature(p)) for v, p in m.selected().items()) + (repr(m.settings),)


def server_options(backend: str, options: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A served model's backend options: ONNX Runtime's intra-op spin-waiting is off unless the model's settings
    turn it on. A server shares its cores with its event loop and, often, its clients; threads that spin between
    ORT ops take that CPU from them (docs/serving.md, "Spin-waiting"). An embedded ``xs.load`` keeps ORT's default."""
    from ..runtime.backends.select import ALIASES

    out = dict(options or {})
    if ALIASES.get(backend, backend) in ("auto", "onnxruntime", "migraphx"):
        out.setdefault("spinning", False)
    return out or None


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = {**base, **over}
    for key in ("batch", "options"):
        if key in base or key in over:
            out[key] = {**(base.get(key) or {}), **(over.get(key) or {})}
    return out


def _no_version(m: RepoModel) -> str:
    have = ", ".join(str(v) for v in sorted(m.versions)) or "none"
    problems = "; ".join(f"{k}/: {why}" for k, why in sorted(m.problems.items()))
    return (f"model {m.name!r}: no version to serve (policy {m.policy}; versions found: {have})"
            + (f"; skipped {problems}" if problems else ""))


def _check_params(params: Mapping[str, Any] | None, allowed: Sequence[str], what: str) -> None:
    unknown = sorted(set(params or {}) - set(allowed))
    if unknown:
        raise UserError(f"repository {what}: parameter(s) {', '.join(unknown)} not supported"
                        + (f" (supported: {', '.join(allowed)})" if allowed else
                           " (a model's settings live in its folder: NAME/config.yaml)"))


__all__ = ["ModelControl", "MODES", "DEFAULT_POLL_INTERVAL", "server_options"]
