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
the relay learns what the pipe holds in its first second (the median, measured with FIONREAD: pacat
holds most of the prefill itself), and once the pipe holds :data:`SLACK_MS` more than that, the
excess is cut from the next blocks: the echo loses what the stall cost, and its delay is back within
a few milliseconds of where it was.

It prints ``ready`` on stderr once it has relayed its first blocks, and ends when stdin ends.
"""

from __future__ import annotations

import argparse
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
SLACK_MS = 10
"""What the pipe to the playback stream may hold over its learned level before the excess is cut (pacat
takes what its stream asks for in bursts of a few milliseconds)."""
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
    levels: list[int] = []
    level: int | None = None  # bytes the pipe holds in the steady state, once learned
    slack = 2 * args.rate * SLACK_MS // 1000
    try:
        while len(data := src.read(2 * block)) == 2 * block:
            echo = path.process(np.frombuffer(data, dtype="<i2"))
            out = np.clip(np.round(echo), -32768, 32767).astype("<i2").tobytes()
            queued = queued_bytes(dst.fileno())
            if queued is not None and blocks >= READY_BLOCKS:
                if level is None:
                    levels.append(queued)
                    if len(levels) == LEARN_BLOCKS:
                        level = sorted(levels)[len(levels) // 2]
                elif queued > level + slack:
                    out = out[min(len(out), (queued - level) // 2 * 2) :]  # cut the excess, whole samples
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
