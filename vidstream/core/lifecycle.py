"""The shape of every long-lived component: `start()` and `close()`, both safe to call twice,
and `async with` around them."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Component:
    async def start(self) -> None:
        """Acquire resources; safe to call twice."""

    async def close(self) -> None:
        """Release resources; safe to call twice."""

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.close()  # a half-started component releases what it took
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
