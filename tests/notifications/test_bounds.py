"""notifications.bounds.within: a bound that a behind event loop does not use up,
and that still fails a call nobody answers, on an idle loop at once and on a
behind one by its allowance."""

import asyncio
import threading
import time

import pytest

from notifications import bounds


async def hog_the_loop(turn: float) -> None:
    """Keep the loop behind: every turn of it lasts `turn` seconds."""
    while True:
        time.sleep(turn)
        await asyncio.sleep(0)


def answer_from_a_thread(after: float) -> asyncio.Future:
    """A future another thread resolves after `after` seconds, as a store's reply
    is ready while the loop is still busy elsewhere."""
    loop = asyncio.get_running_loop()
    answer = loop.create_future()
    timer = threading.Timer(after, loop.call_soon_threadsafe, [answer.set_result, "answered"])
    timer.start()
    return answer


async def test_an_answer_kept_waiting_by_a_behind_loop_is_not_a_timeout():
    hog = asyncio.create_task(hog_the_loop(0.3))
    try:
        await asyncio.sleep(0)
        # The scenario is real: a plain timeout fires although the answer came in time.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await answer_from_a_thread(0.1)
        async with bounds.within(0.2):
            assert await answer_from_a_thread(0.1) == "answered"
    finally:
        hog.cancel()


async def test_no_answer_on_an_idle_loop_fails_in_the_bound():
    began = time.monotonic()
    with pytest.raises(TimeoutError):
        async with bounds.within(0.2):
            await asyncio.Event().wait()
    # Not the 10 s allowance: a pause of the process (a collection, a descheduled
    # turn) at the due moment may extend the bound by a few turns, no more.
    assert 0.2 <= time.monotonic() - began < 0.2 + 1.0


async def test_no_answer_on_a_behind_loop_fails_by_the_allowance(monkeypatch):
    monkeypatch.setattr(bounds, "LAG_ALLOWANCE_SECONDS", 1.0)
    hog = asyncio.create_task(hog_the_loop(0.1))
    began = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            async with bounds.within(0.2):
                await asyncio.Event().wait()
    finally:
        hog.cancel()
    # 0.2 s and the allowance, and the few turns (0.1 s each) it takes to end.
    assert 1.1 <= time.monotonic() - began < 1.2 + 0.6
