"""The PulseAudio room's acoustic echo, as a process of its own: ``python -m benchlib.echorelay``.

It reads the speaker's monitor (s16le mono at ``--rate``, from ``pacat --record`` on stdin) in 10 ms
blocks, puts each through :class:`earshot.audio.room.EchoPath` (a loudspeaker and a room) and writes it
to stdout (``pacat --playback`` into the ``room`` sink).

A process of its own, and a jitter buffer in front of the playback stream, because the echo's delay
must stay put for a whole run as a room's does, whatever the test's own process (the emulator, the
analysis) does with its CPU and its GIL.

So ``--prefill-ms`` of silence is written before the first block: it waits in the pipe to pacat
(which takes only what its 20 ms stream buffer wants), and a stall of the relay shorter than that
drains the pipe instead of the stream. After a stall the relay catches up from the record pipe, and
the delay is what it was.

A longer stall underruns the playback stream: the server plays silence, then the rest, later by the
stall, and the pipe holds that much more. Left there, the echo came later from then on (35 -> 50 ms
and more in steps on a loaded machine: a room that moved under the daemon, which no room does). So
the relay learns the least its pipe holds (FIONREAD, over its first second: pacat holds most of the
prefill itself), and when the least over the last half second stands more than :data:`SLACK_MS`
above that, the excess is cut: the echo loses what the stall cost, and its delay is back within a
couple of milliseconds of where it was. (A median level with 10 ms of slack, tried first, left a
5.75 ms stall in place on an idle machine, and the daemon met a moved room.)

It prints ``ready`` on stderr once it has relayed its first blocks, and ends when stdin ends.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import os
import struct
import sys
import termios

import numpy as np

from earshot.audio.room import EchoPath

BLOCK_MS = 10
READY_BLOCKS = 10
SLACK_MS = 2
"""How much fuller than its learned floor the pipe may stay (its least over half a second: pacat takes
what its stream asks for in bursts of a few milliseconds, 9-14 ms in the pipe here) before the excess
is cut."""
LEARN_BLOCKS = 100


def queued_bytes(fd: int) -> int | None:
    """Bytes waiting in the pipe ``fd`` (either end), or None where FIONREAD does not tell."""
    try:
        return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    """Relay stdin to stdout through the room (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="echorelay")
    parser.add_argument("--rate", type=int, required=True)
    parser.add_argument("--gain-db", type=float, required=True)
    parser.add_argument("--rt60-ms", type=float, required=True)
    parser.add_argument("--drive-db", type=float, required=True)
    parser.add_argument("--prefill-ms", type=int, default=40)
    args = parser.parse_args(argv)
    with_priority()
    path = EchoPath(rate_hz=args.rate, delay_ms=0.0, gain_db=args.gain_db, rt60_ms=args.rt60_ms, drive_db=args.drive_db)
    block = args.rate * BLOCK_MS // 1000
    src, dst = sys.stdin.buffer, sys.stdout.buffer
    dst.write(bytes(2 * args.rate * args.prefill_ms // 1000))
    dst.flush()
    blocks = 0
    floor: int | None = None  # the least the pipe holds over a stretch, in the steady state, once learned
    recent: collections.deque[int] = collections.deque(maxlen=LEARN_BLOCKS // 2)
    slack = 2 * args.rate * SLACK_MS // 1000
    owed = 0  # bytes still to cut after a stall
    try:
        while len(data := src.read(2 * block)) == 2 * block:
            echo = path.process(np.frombuffer(data, dtype="<i2"))
            out = np.clip(np.round(echo), -32768, 32767).astype("<i2").tobytes()
            queued = queued_bytes(dst.fileno())
            if queued is not None and blocks >= READY_BLOCKS:
                recent.append(queued)
                if floor is None:
                    if blocks >= READY_BLOCKS + LEARN_BLOCKS:
                        floor = min(recent)
                elif len(recent) == recent.maxlen and min(recent) > floor + slack:
                    # A stall left the pipe fuller for half a second: cut the excess, whole samples.
                    owed = (min(recent) - floor) // 2 * 2
                    recent.clear()
            if owed:
                cut = min(len(out), owed)
                out, owed = out[cut:], owed - cut
            if out:
                dst.write(out)
                dst.flush()
            blocks += 1
            if blocks == READY_BLOCKS:
                print("ready", file=sys.stderr, flush=True)
    except (BrokenPipeError, KeyboardInterrupt):
        pass
    return 0


def with_priority() -> None:
    """Run ahead of the daemon and the test (a room does not wait for the CPU); best effort."""
    with contextlib.suppress(OSError):
        os.nice(-10)


if __name__ == "__main__":
    sys.exit(main())
