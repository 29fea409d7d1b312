"""Child processes (tools, hooks, the mixer), contained: bounded in time, output and reach.

:func:`run` starts an argv without a shell in a session of its own, gives it ``stdin``, keeps a
bounded part of its output and returns within ``timeout_s`` whatever the child does: flooding its
pipes, ignoring stdin, or leaving a grandchild that holds them open. The end of a run is the end of
the process it started, not the end of its pipes.

Whatever the run leaves behind is killed with it:

- its process group, and every descendant found in ``/proc`` while the run's process lives, even
  one that called ``setsid``;
- any process still holding the run's stdout or stderr pipe, wherever it went;
- descendants that escaped by outliving their parent. With :func:`become_subreaper` (the daemon
  calls it at start) those are re-parented to the daemon instead of to PID 1, so they are found as
  children of the daemon that no run of ours started, and killed and reaped.

Under systemd the unit's ``KillMode=control-group`` still removes everything at stop; this keeps a
daemon that runs for months from collecting escaped processes meanwhile.

:data:`SCRUBBED_ENV` is the one list of variables no child ever gets (the API key, the credential
directory, systemd's notify socket and watchdog).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["SCRUBBED_ENV", "Outcome", "become_subreaper", "child_env", "run", "seal_secrets"]

logger = logging.getLogger(__name__)

SCRUBBED_ENV = ("OPENAI_API_KEY", "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC")
"""Removed from every child's environment."""

_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_DUMPABLE = 4
_EOF_GRACE_S = 0.2
"""After the process exits, how long its pipes may stay open (a grandchild holding them) before the run ends."""
_REAP_WAIT_S = 2.0

_started: set[int] = set()
"""Pids of the runs in progress: the daemon's children that are not escaped descendants."""
_subreaper = False
"""Set by :func:`become_subreaper`: only then are children of ours that no run started escaped
descendants (otherwise they are someone else's, e.g. a test harness's)."""
_spawning = 0
"""Runs being started: their processes are children not yet in :data:`_started`."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended.

    Attributes:
        status: the exit status, ``-N`` for signal N; None when it was stopped at ``timeout_s``.
        stdout: the first ``keep_stdout`` bytes written to stdout.
        stdout_total: bytes written to stdout in all.
        stderr: the last ``keep_stderr`` bytes written to stderr.
    """

    status: int | None
    stdout: bytes
    stdout_total: int
    stderr: bytes


def become_subreaper() -> bool:
    """Make orphaned descendants of this process its children (Linux ``PR_SET_CHILD_SUBREAPER``)."""
    global _subreaper
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        _subreaper = int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        _subreaper = False
    return _subreaper


def seal_secrets() -> bool:
    """Keep the key from processes of the same user, children included (call once, at start).

    The key leaves this process's environment (a child started without an explicit environment
    cannot inherit it), and the process becomes non-dumpable (``PR_SET_DUMPABLE`` 0): its
    ``/proc/PID/environ`` and ``/proc/PID/mem``, which still hold the environment it started with,
    are then closed to other processes of its user, such as a tool reading ``/proc/$PPID/environ``.
    It also means no core dump holds the key. Returns whether the kernel agreed.
    """
    for name in ("OPENAI_API_KEY",):
        os.environ.pop(name, None)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def child_env(base: Mapping[str, str], **extra: str) -> dict[str, str]:
    """``base`` without :data:`SCRUBBED_ENV`, plus ``extra``."""
    env = {k: v for k, v in base.items() if k not in SCRUBBED_ENV}
    env.update(extra)
    return env


async def run(
    argv: Sequence[str],
    *,
    stdin: bytes | None,
    env: Mapping[str, str],
    timeout_s: float,
    keep_stdout: int | None,
    keep_stderr: int,
) -> Outcome:
    """Run ``argv`` contained; see the module docstring.

    Args:
        argv: the command, run without a shell.
        stdin: written to its stdin, which is then closed (None: ``/dev/null``).
        env: its whole environment (give it :func:`child_env`).
        timeout_s: the run's bound; past it everything it started is killed.
        keep_stdout: bytes of stdout kept (the rest is read and counted); None sends stdout to ``/dev/null``.
        keep_stderr: bytes of the end of stderr kept.

    Raises:
        OSError: it could not be started (``FileNotFoundError`` for a missing command).

    Cancelling is safe: everything it started is killed before the cancellation goes on.
    """
    pipe = asyncio.subprocess.PIPE
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()
    global _spawning
    _spawning += 1  # a child exists before its pid is known here: no orphan hunt until it is
    try:
        transport, protocol = await loop.subprocess_exec(
            lambda: _Protocol(exited, loop),
            *argv,
            stdin=pipe if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=pipe if keep_stdout is not None else asyncio.subprocess.DEVNULL,
            stderr=pipe,
            env=dict(env),
            start_new_session=True,
        )
        proc = asyncio.subprocess.Process(transport, protocol, loop)
        _started.add(proc.pid)
    finally:
        _spawning -= 1
    entry = _stat(proc.pid)
    started_at = entry[2] if entry is not None else None
    out, err = bytearray(), bytearray()
    counts = [0]
    tasks = [loop.create_task(_collect(proc.stderr, err, keep_stderr, tail=True))]
    if keep_stdout is not None:
        tasks.append(loop.create_task(_collect(proc.stdout, out, keep_stdout, tail=False, counts=counts)))
    readers = list(tasks)
    if stdin is not None:
        tasks.append(loop.create_task(_feed(proc.stdin, stdin)))
    status: int | None = None
    try:
        try:
            async with asyncio.timeout(timeout_s):
                await exited  # the process ended: its pipes may still be held by what it left behind
                status = transport.get_returncode()
                await asyncio.wait(readers, timeout=_EOF_GRACE_S)
        except TimeoutError:
            status = None
    finally:
        held = [] if all(t.done() for t in readers) else _pipe_inodes(transport)
        killed = kill_tree(proc.pid, since=started_at, holding=held)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        transport.close()  # our ends of the pipes: nothing it left can hold the run open
        await _reap(proc)
        await _gone(loop, killed)
        _kill_orphans(started_at)  # reaps what the first pass killed
        _started.discard(proc.pid)
    return Outcome(status, bytes(out), counts[0], bytes(err))


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """asyncio's own protocol, which also tells when the process exited (not when its pipes closed)."""

    def __init__(self, exited: asyncio.Future[None], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=65536, loop=loop)
        self._exited = exited

    def process_exited(self) -> None:
        super().process_exited()
        _resolve(self._exited)


def kill_tree(pid: int, *, since: int | None = None, holding: Sequence[int] = ()) -> set[int]:
    """SIGKILL ``pid``, its process group, its descendants, and the daemon's escaped orphans.

    Args:
        pid: the run's process (the leader of its own session and group).
        since: the run's start time (``/proc`` clock ticks): orphans that started before it are left alone.
        holding: inodes of the run's pipes: whoever still holds one is part of the run, wherever it went.

    Returns:
        The pids signalled (the run's process left out): :func:`run` waits for them to end.
    """
    victims: set[int] = _holders(holding) if holding else set()
    for _ in range(3):  # a forking child may add more while we look
        found = _descendants(pid) - victims
        if not found:
            break
        victims |= found
        for victim in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(victim, signal.SIGSTOP)  # stopped processes cannot fork while we look again
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    for victim in victims | {pid}:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(victim, signal.SIGKILL)
    return victims | _kill_orphans(since)


def _kill_orphans(since: int | None) -> set[int]:
    """Kill (and reap) the daemon's children that no run in progress started: escaped descendants."""
    killed: set[int] = set()
    if not _subreaper:
        return killed
    me = os.getpid()
    for child, (ppid, state, start) in _table().items():
        if ppid != me or child in _started:
            continue
        if state not in ("Z", "X") and ((since is not None and start < since) or _spawning):
            continue  # older than the run: not ours to judge; or maybe a run being started (the next pass)
        if state not in ("Z", "X"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, signal.SIGKILL)
                killed.add(child)
                logger.info("killed process %d, left behind by a tool or hook", child)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(child, os.WNOHANG)  # a zombie now, or reaped by the second pass
    return killed


async def _gone(loop: asyncio.AbstractEventLoop, pids: set[int]) -> None:
    """Wait (bounded) until every process in ``pids`` has ended: a signal is delivered asynchronously."""
    waits: list[asyncio.Future[None]] = []
    fds: list[int] = []
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except OSError:  # already gone (or no pidfd here: nothing to wait on)
            continue
        ended: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _resolve, ended)
        waits.append(ended)
        fds.append(fd)
    try:
        if waits:
            await asyncio.wait(waits, timeout=_REAP_WAIT_S)
    finally:
        for fd in fds:
            loop.remove_reader(fd)
            os.close(fd)


def _pipe_inodes(transport: asyncio.SubprocessTransport) -> list[int]:
    inodes = []
    for fd in (1, 2):
        pipe = transport.get_pipe_transport(fd)
        if pipe is None:
            continue
        handle = pipe.get_extra_info("pipe")
        with contextlib.suppress(AttributeError, OSError, ValueError):
            inodes.append(os.fstat(handle.fileno()).st_ino)
    return inodes


def _holders(inodes: Sequence[int]) -> set[int]:
    """Processes other than this one with any of the pipes ``inodes`` open."""
    links = {f"pipe:[{ino}]" for ino in inodes}
    me = os.getpid()
    found: set[int] = set()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            fds = os.listdir(f"/proc/{name}/fd")
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{name}/fd/{fd}") in links:
                    found.add(int(name))
                    break
    return found


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for child, (ppid, _state, _start) in _table().items():
        children.setdefault(ppid, []).append(child)
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def _table() -> dict[int, tuple[int, str, int]]:
    """Every process: pid -> (ppid, state, start time in clock ticks), from ``/proc/*/stat``."""
    table: dict[int, tuple[int, str, int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (entry := _stat(int(name))) is not None:
            table[int(name)] = entry
    return table


def _stat(pid: int) -> tuple[int, str, int] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()  # the name may hold spaces and parentheses
    try:
        return int(fields[1]), fields[0].decode(), int(fields[19])
    except (IndexError, ValueError):
        return None


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """Wait for asyncio to see the killed process end and its pipes closed, bounded."""
    try:
        async with asyncio.timeout(_REAP_WAIT_S):
            await proc.wait()
    except TimeoutError:
        logger.warning("process %d did not end after it was killed", proc.pid)


async def _feed(writer: asyncio.StreamWriter | None, data: bytes) -> None:
    if writer is None:
        return
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a child need not read its stdin
        writer.write(data)
        await writer.drain()
    writer.close()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        await writer.wait_closed()


async def _collect(
    reader: asyncio.StreamReader | None, kept: bytearray, keep: int, *, tail: bool, counts: list[int] | None = None
) -> None:
    """Read to EOF (a chatty child never blocks on a full pipe), keeping ``keep`` bytes of the start or tail."""
    if reader is None:
        return
    while chunk := await reader.read(65536):
        if counts is not None:
            counts[0] += len(chunk)
        if tail:
            kept += chunk
            del kept[:-keep]
        elif len(kept) < keep:
            kept += chunk[: keep - len(kept)]
