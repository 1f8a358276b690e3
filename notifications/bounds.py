"""Time bounds on the channel layer and the live store that count the store's
time, not the event loop's.

A call to Redis is answered only once the loop gets round to reading the reply
(and then to waking the caller). A loop that is behind (hundreds of generations
in flight, each turn of the loop lasting hundreds of milliseconds) makes every
call outlast a plain timeout however fast Redis answers, and a layer or store
taken for down stops live text that would have arrived. So when `seconds` have
passed, the bound looks whether the loop is behind, by timing one turn of it:
if it is, the call gets a few more turns, and so on; if it is not, the call has
had its time and fails. However far behind the loop, a call ends by `seconds` +
LAG_ALLOWANCE_SECONDS (and the few turns of the loop it takes to end it): a
store that does not answer delays nothing beyond that (I6)."""

import asyncio
from types import TracebackType

# A turn of the loop longer than this is the loop being behind, not idle.
BEHIND_SECONDS = 0.05
# A behind loop gives a call this many more turns at a time: one to send, one to
# read the reply, one to wake the caller.
TURNS = 3
# The most a behind loop adds to a bound.
LAG_ALLOWANCE_SECONDS = 10.0


class within:
    """Like `asyncio.timeout(seconds)` (TimeoutError at the end), but the time a
    behind loop keeps the answer waiting does not count, up to
    LAG_ALLOWANCE_SECONDS. A class, not a generator: every live change and every
    publish passes through one."""

    __slots__ = ("_bound", "_last_chance", "_loop", "_pending", "_seconds")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    async def __aenter__(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        now = loop.time()
        self._last_chance = now + self._seconds + LAG_ALLOWANCE_SECONDS
        self._bound = asyncio.Timeout(None)
        await self._bound.__aenter__()
        self._pending: asyncio.Handle | None = loop.call_at(now + self._seconds, self._due)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        if self._pending is not None:
            self._pending.cancel()
        return await self._bound.__aexit__(kind, error, traceback)

    def _due(self) -> None:
        self._pending = self._loop.call_soon(self._turned, self._loop.time())

    def _turned(self, started: float) -> None:
        now = self._loop.time()
        turn = now - started
        if turn >= BEHIND_SECONDS and now < self._last_chance:
            self._pending = self._loop.call_at(
                min(now + TURNS * turn, self._last_chance), self._due
            )
        else:
            self._pending = None
            self._bound.reschedule(now)  # expires at once
