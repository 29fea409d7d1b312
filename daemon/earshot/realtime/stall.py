"""Is the network stalled? Judged from the socket, never from the length of our own queue (pure).

Our send queue grows for two reasons: the network takes nothing (a stall), or the event loop was
late (a slow CPU catching up) and the writer has not had its turn yet. Only the first is a network
fault. :class:`SocketWatch` tells them apart from what the kernel accepted: ``sent`` (bytes handed
to the transport, counted by the writer) minus ``buffered`` (bytes the transport still holds,
``transport.get_write_buffer_size()``) is what the kernel took. The socket is stalled when it holds
bytes and has taken none of them for ``stall_s``. A dead peer that leaves the kernel's buffer open
is noticed by the WebSocket pings (``realtime.ping_timeout_s``), the other half of the rule.
"""

from __future__ import annotations

__all__ = ["SocketWatch"]


class SocketWatch:
    """Progress of one connection's socket.

    Args:
        stall_s: bytes waiting this long with none accepted is a stall.
        now: the time the connection opened.
    """

    def __init__(self, stall_s: float, now: float) -> None:
        self.stall_s = stall_s
        self._accepted = 0
        self._buffered = 0
        self._progress_at = now

    def sample(self, now: float, *, sent: int, buffered: int) -> None:
        """Record the socket at ``now``: ``sent`` bytes handed over in all, ``buffered`` still held."""
        accepted = sent - buffered
        if buffered == 0 or accepted > self._accepted:
            self._progress_at = now
        self._accepted = max(self._accepted, accepted)
        self._buffered = buffered

    def stalled_for(self, now: float) -> float:
        """How long bytes have waited with none accepted (0 while the socket takes them)."""
        return 0.0 if self._buffered == 0 else max(0.0, now - self._progress_at)

    def stalled(self, now: float) -> bool:
        """The socket holds bytes and took none of them for ``stall_s``."""
        return self.stalled_for(now) > self.stall_s
