"""grpc.health.v1 for our servers, with Watch streams that end at shutdown.

The stock asyncio HealthServicer keeps every Watch stream open forever, so a graceful ``server.stop(grace)``
would wait out the whole grace period for any load balancer watching health. Here, shutdown first tells
watchers NOT_SERVING, then ends their streams, and the grace period is spent on real requests only.
"""

from __future__ import annotations

import asyncio

from grpc_health.v1._async import HealthServicer


class HealthService(HealthServicer):
    def __init__(self) -> None:
        super().__init__()
        self._watches: set[asyncio.Future] = set()

    async def Watch(self, request, context) -> None:
        inner = asyncio.ensure_future(super().Watch(request, context))
        self._watches.add(inner)
        try:
            await inner
        except asyncio.CancelledError:
            if not (inner.cancelled() and self._gracefully_shutting_down):
                raise  # the caller went away: a real cancellation
        finally:
            self._watches.discard(inner)

    async def shut_down(self, notice_seconds: float = 0.1) -> None:
        """NOT_SERVING for every service, a moment for watchers to read it, then end their streams."""
        await self.enter_graceful_shutdown()
        if self._watches:
            await asyncio.sleep(notice_seconds)
        for watch in list(self._watches):
            watch.cancel()
