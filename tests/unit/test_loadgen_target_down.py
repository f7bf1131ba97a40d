"""Issue 18 item 15d: a load run stops with ``TargetDown`` once every request has failed to connect for 1 s,
instead of firing refused connections (60k/s) until its duration is over; other errors never stop it."""

from __future__ import annotations

import asyncio
import time

import pytest

from xinfer_sdk.loadgen import TargetDown, closed_loop, open_loop


def _refused():
    async def send():
        await asyncio.sleep(0)
        raise ConnectionRefusedError(111, "Connection refused")

    return send


def test_closed_loop_stops_when_nothing_but_connection_errors_for_a_second():
    t0 = time.perf_counter()
    with pytest.raises(TargetDown) as exc:
        closed_loop(_refused(), concurrency=8, duration=30, warmup=0)
    assert time.perf_counter() - t0 < 10  # the bug: the full 30 s of refused connections
    assert exc.value.error == "ConnectionRefusedError" and exc.value.seconds >= 1 and exc.value.answered == 0


def test_open_loop_stops_too_and_says_how_many_were_answered_before():
    state = {"n": 0}

    async def send():
        state["n"] += 1
        if state["n"] > 20:  # the server answers 20 requests, then goes away
            raise ConnectionResetError(104, "Connection reset by peer")

    t0 = time.perf_counter()
    with pytest.raises(TargetDown) as exc:
        open_loop(send, rate=200, duration=30, warmup=0, poisson=False)
    assert time.perf_counter() - t0 < 10
    assert exc.value.answered == 20 and "after 20 answered requests" in str(exc.value)


def test_errors_from_a_server_that_answers_do_not_stop_the_run():
    async def send():
        await asyncio.sleep(0.001)
        raise RuntimeError("503")

    r = closed_loop(send, concurrency=2, duration=1.5, warmup=0)
    assert r.completed == 0 and r.errors["RuntimeError"] > 0
