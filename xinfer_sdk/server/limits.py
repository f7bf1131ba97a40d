"""Network limits of the server's front ends (HTTP/1.1 and HTTP/2 gRPC), the server-wide budget of buffered
request bytes, and the file-descriptor budget checked at start.

Every limit is a setting (``xinfer-sdk serve --header-timeout ...``, ``server:`` in config.yaml,
``InferenceServer(limits=...)``); the defaults are what a production deployment behind a load balancer would pick.
docs/security.md explains each one and what still needs a proxy in front.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from ..errors import UserError

log = logging.getLogger(__name__)

#: file descriptors kept for everything that is not a client connection (models, logs, pipes, the listeners)
FD_RESERVE = 64


@dataclasses.dataclass
class ServerLimits:
    """Timeouts and caps of the network front ends (seconds and bytes)."""

    #: HTTP/1.1: the request line and headers must arrive within this (408 + close); HTTP/2: the client preface and
    #: its first SETTINGS frame
    header_timeout: float = 10.0
    #: HTTP/1.1: a request body must arrive within this once its headers are in (408 + close); HTTP/2: a request
    #: message must complete within this once its first byte arrived (DEADLINE_EXCEEDED + RST_STREAM)
    body_timeout: float = 30.0
    #: HTTP/1.1: a keep-alive connection with no request in progress is closed after this
    keepalive_timeout: float = 15.0
    #: HTTP/2: a connection with no open stream gets GOAWAY(NO_ERROR) and is closed after this
    idle_timeout: float = 30.0
    #: connections per port; beyond it a new HTTP/1.1 connection is answered 503 + close, an HTTP/2 one gets
    #: GOAWAY(NO_ERROR, "connection limit") and is closed
    max_connections: int = 4096
    #: request bytes all connections together may hold before the model has taken them (bodies and gRPC messages
    #: still arriving); beyond it requests are refused (HTTP 503, gRPC RESOURCE_EXHAUSTED / REFUSED_STREAM)
    max_buffered: int = 1 << 30
    #: seconds the server keeps serving normally after SIGTERM while readiness is already false (for load balancers
    #: that need time to notice); 0 = refuse new work at once (503 / UNAVAILABLE) while still answering
    drain_delay: float = 0.0

    def __post_init__(self) -> None:
        for f in ("header_timeout", "body_timeout", "keepalive_timeout", "idle_timeout"):
            v = getattr(self, f)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
                raise UserError(f"{flag(f)}: expected a duration above 0, got {v!r}")
            setattr(self, f, float(v))
        if not isinstance(self.drain_delay, (int, float)) or self.drain_delay < 0:
            raise UserError(f"{flag('drain_delay')}: expected a duration of 0 or more, got {self.drain_delay!r}")
        self.drain_delay = float(self.drain_delay)
        if not isinstance(self.max_connections, int) or isinstance(self.max_connections, bool) \
                or self.max_connections < 1:
            raise UserError(f"{flag('max_connections')}: expected a whole number >= 1, got {self.max_connections!r}")
        if not isinstance(self.max_buffered, int) or self.max_buffered < 1 << 20:
            raise UserError(f"{flag('max_buffered')}: expected a size of at least 1MiB, got {self.max_buffered!r}")

    @classmethod
    def from_settings(cls, values: dict[str, Any]) -> ServerLimits:
        """From config.yaml / CLI values (durations and sizes already parsed); unknown keys are the caller's
        business (config.py checks them)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known and v is not None})


#: the setting names, as config.yaml keys (the CLI flags are the same with dashes)
LIMIT_KEYS = tuple(f.name for f in dataclasses.fields(ServerLimits))
DURATION_KEYS = ("header_timeout", "body_timeout", "keepalive_timeout", "idle_timeout", "drain_delay")
SIZE_KEYS = ("max_buffered",)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


class RequestBudget:
    """Request bytes held by all connections together (one per server, used on the event loop thread only).

    A front end calls ``take(n)`` before it buffers ``n`` more bytes of a request and ``give(n)`` when the model has
    them (or the request is dropped); ``take`` returns False when the budget would be exceeded: refuse the request.
    """

    __slots__ = ("limit", "used", "refused")

    def __init__(self, limit: int):
        self.limit = int(limit)
        self.used = 0
        self.refused = 0  # requests refused because the budget was spent (for /metrics and tests)

    def take(self, n: int) -> bool:
        if self.used + n > self.limit:
            self.refused += 1
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used = max(0, self.used - n)


def fd_budget(max_connections: int, listeners: int) -> int:
    """Check the open-file limit at start: raise the soft limit toward the hard one when the connection caps need it,
    and lower the per-port cap (with a warning) when even the hard limit is too small. Returns the cap to use."""
    try:
        import resource
    except ImportError:  # Windows: no RLIMIT_NOFILE; the OS limit is what it is
        return max_connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = max_connections * max(1, listeners) + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= need:
        return max_connections
    cap = max(1, (soft - FD_RESERVE) // max(1, listeners))
    log.warning("%-28s | open-file limit %d (hard %s) is below %d connections x %d ports: --max-connections lowered "
                "to %d per port (raise the limit: ulimit -n, or the container runtime's nofile)", "server", soft,
                "unlimited" if hard == resource.RLIM_INFINITY else hard, max_connections, listeners, cap)
    return cap
