"""The control socket: ``earshot engage | cancel | status | mute | unmute | stop | timers | volume``.

``earshot follow`` streams the daemon's events over it (:mod:`earshot.feed`).

Protocol: a Unix stream socket; each request is one line of JSON, ``{"cmd": "status"}`` (optionally
``"args": {...}``), answered by one line of JSON: the handler's result with ``"ok": true``, or
``{"ok": false, "error": "..."}``. A client may send several requests on one connection.

Access: the socket is ``0600`` (the daemon's user only) or ``0660`` with ``control.group`` as its
group, so members of that group (e.g. ``earshot``) can use the CLI without root. It is created under
a temporary name, given its mode and group, then renamed into place: there is no moment when it is
reachable with the wrong permissions.

The server side is :class:`ControlServer` (asyncio); the CLI uses the blocking :func:`request`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import json
import logging
import os
import socket
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from earshot.config import ControlConfig
from earshot.errors import DaemonError
from earshot.feed import EventFeed
from earshot.statusview import format_status

__all__ = [
    "COMMANDS",
    "MAX_REQUEST_BYTES",
    "ControlHandler",
    "ControlServer",
    "answer",
    "default_socket_path",
    "format_status",
    "request",
]

logger = logging.getLogger(__name__)

COMMANDS = ("engage", "cancel", "status", "mute", "unmute", "stop", "timers", "volume", "say", "follow")
"""Commands the daemon accepts on the control socket."""

MAX_REQUEST_BYTES = 4096
"""Longest request line accepted; a longer one gets an error and the connection is closed."""

SOCKET_NAME = "control.sock"
_RUN_DIR = Path("/run/earshot")
_IDLE_TIMEOUT_S = 30.0
_MAX_CLIENTS = 16


class ControlHandler(Protocol):
    """What the app implements to serve the control socket."""

    async def handle(self, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        """Carry out ``cmd`` (one of :data:`COMMANDS`) and return a JSON-able result.

        Raise :class:`~earshot.errors.DaemonError` to refuse with a message the user sees
        (``"muted: unmute first"``); any other exception is answered as an internal error.
        """
        ...


def default_socket_path(
    config: ControlConfig, env: Mapping[str, str] | None = None, *, run_dir: Path = _RUN_DIR
) -> Path:
    """Where the control socket lives.

    ``control.socket`` when set; else ``$RUNTIME_DIRECTORY/control.sock`` (systemd's
    ``RuntimeDirectory=earshot``: the daemon under its unit); else ``/run/earshot/control.sock`` when
    that directory exists (the CLI, run by a user, finds the unit's socket there); else
    ``$XDG_RUNTIME_DIR/earshot/control.sock`` (a daemon run by hand); else ``/run/earshot``.

    Args:
        config: the ``control`` section.
        env: the environment (``os.environ`` when None).
        run_dir: the system runtime directory (a parameter for tests).
    """
    if config.socket is not None:
        return config.socket
    environ = os.environ if env is None else env
    runtime = environ.get("RUNTIME_DIRECTORY", "")
    if runtime:
        # systemd passes a colon-separated list when several RuntimeDirectory= are set.
        return Path(runtime.split(":")[0]) / SOCKET_NAME
    if run_dir.is_dir():
        return run_dir / SOCKET_NAME
    xdg = environ.get("XDG_RUNTIME_DIR", "")
    if xdg:
        return Path(xdg) / "earshot" / SOCKET_NAME
    return run_dir / SOCKET_NAME


class ControlServer:
    """An asyncio Unix-socket server answering control requests through ``handler``.

    Use as ``async with ControlServer(path, group, app):`` or call :meth:`start` / :meth:`aclose`.
    A bad request gets an error response; nothing a client sends can end the server.

    Args:
        path: socket path (see :func:`default_socket_path`); its directory is created (0755) if missing.
        group: group name allowed to connect (socket mode 0660), or None for owner only (0600).
        handler: the app (see :class:`ControlHandler`).
        max_request_bytes: bound of one request line.
        idle_timeout_s: a connection silent this long is closed.
    """

    def __init__(
        self,
        path: Path,
        group: str | None,
        handler: ControlHandler,
        *,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        idle_timeout_s: float = _IDLE_TIMEOUT_S,
        feed: EventFeed | None = None,
    ) -> None:
        self.path = path
        self.group = group
        self._handler = handler
        self._feed = feed
        self._max_request_bytes = max_request_bytes
        self._idle_timeout_s = idle_timeout_s
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self._inode: tuple[int, int] | None = None

    async def start(self) -> None:
        """Bind the socket and start serving.

        Raises:
            DaemonError: another daemon is listening on the path, the path is not a socket, the
                group does not exist, or the socket cannot be created (message names the path).
        """
        gid = _group_id(self.group) if self.group is not None else None
        await asyncio.to_thread(_remove_stale, self.path)
        sock = _bind(self.path, gid)
        try:
            st = self.path.stat()
            self._inode = (st.st_dev, st.st_ino)
            self._server = await asyncio.start_unix_server(self._serve_client, sock=sock, limit=self._max_request_bytes)
        except BaseException:
            sock.close()
            self._unlink_own()
            raise
        logger.info("control socket listening at %s (mode %s)", self.path, "0660" if gid is not None else "0600")

    async def aclose(self) -> None:
        """Stop serving, end open client connections and remove the socket file. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._clients):
            task.cancel()
        if self._clients:
            await asyncio.gather(*self._clients, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await server.wait_closed()
        self._unlink_own()

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def _unlink_own(self) -> None:
        # Remove the socket only if it is still ours (a newer daemon may have replaced it).
        try:
            st = self.path.stat()
        except OSError:
            return
        if self._inode == (st.st_dev, st.st_ino):
            with contextlib.suppress(OSError):
                self.path.unlink()

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
        try:
            if len(self._clients) > _MAX_CLIENTS:
                await _send(writer, {"ok": False, "error": "too many control connections"})
                return
            while True:
                try:
                    async with asyncio.timeout(self._idle_timeout_s):
                        line = await reader.readline()
                except TimeoutError:
                    return
                except ValueError:  # LimitOverrunError is re-raised as ValueError by readline()
                    await _send(writer, {"ok": False, "error": f"request longer than {self._max_request_bytes} bytes"})
                    return
                if not line:
                    return
                if not line.strip():
                    continue
                if _is_follow(line):
                    await self._follow(reader, writer)
                    return
                await _send(writer, await self._answer(line))
        except (ConnectionError, OSError) as exc:
            logger.debug("control client went away: %s", exc)
        finally:
            if task is not None:
                self._clients.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    async def _follow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """``follow``: the events as they happen, one JSON line each, until the client goes away."""
        if self._feed is None:
            await _send(writer, {"ok": False, "error": "this daemon has no event stream"})
            return
        try:
            follower = self._feed.follow()
        except DaemonError as exc:
            await _send(writer, {"ok": False, "error": str(exc)})
            return
        gone = asyncio.ensure_future(reader.read(1))  # the client closing (or writing anything) ends it
        try:
            await _send(writer, {"ok": True, "following": True})
            while True:
                event = asyncio.ensure_future(follower.next())
                await asyncio.wait({event, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not event.done():
                    event.cancel()
                    return
                await _send(writer, event.result())
        finally:
            follower.close()
            gone.cancel()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            message = json.loads(line)
        except (UnicodeDecodeError, ValueError):
            return {"ok": False, "error": "request is not valid JSON"}
        return await answer(self._handler, message)


async def answer(handler: ControlHandler, message: Any) -> dict[str, Any]:
    """The answer to one request ``{"cmd": ..., "args": {...}}``: checked, handled, never raising.

    The control socket's and MQTT's (``base/cmd``) requests go through here, so both take the
    same commands with the same checks.
    """
    if not isinstance(message, dict):
        return {"ok": False, "error": 'request must be a JSON object like {"cmd": "status"}'}
    cmd = message.get("cmd")
    args = message.get("args", {})
    if not isinstance(cmd, str) or cmd not in COMMANDS:
        return {"ok": False, "error": f"unknown command {cmd!r}; expected one of {', '.join(COMMANDS)}"}
    if not isinstance(args, dict):
        return {"ok": False, "error": "args must be a JSON object"}
    logger.debug("control: %s", cmd)
    try:
        result = await handler.handle(cmd, args)
        response = {**result, "ok": True}
        json.dumps(response)
    except DaemonError as exc:
        return {"ok": False, "error": str(exc) or type(exc).__name__}
    except Exception:  # a handler bug must not end the control server; logged with its traceback
        logger.exception("control command %r failed", cmd)
        return {"ok": False, "error": f"internal error while handling {cmd!r} (see the journal)"}
    return response


def _is_follow(line: bytes) -> bool:
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, ValueError):
        return False
    return isinstance(message, dict) and message.get("cmd") == "follow"


async def _send(writer: asyncio.StreamWriter, response: Mapping[str, Any]) -> None:
    writer.write(json.dumps(response, separators=(",", ":")).encode() + b"\n")
    async with asyncio.timeout(5.0):
        await writer.drain()


def _group_id(group: str) -> int:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        pass
    if group.isdigit():
        return int(group)
    raise DaemonError(f"control.group: no such group {group!r}")


def _remove_stale(path: Path) -> None:
    """Remove a socket left by a daemon that died; refuse if one is still answering there."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise DaemonError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        pass  # nobody listens: stale
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise DaemonError(f"{path}: cannot check the existing socket: {exc.strerror or exc}") from exc
    else:
        raise DaemonError(f"another earshot daemon is already listening on {path}")
    finally:
        probe.close()
    logger.info("removing stale control socket %s", path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _bind(path: Path, gid: int | None) -> socket.socket:
    """Bind a listening socket under a temporary name, set mode and group, rename it into place."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    except OSError as exc:
        raise DaemonError(f"cannot create {path.parent}: {exc.strerror or exc}") from exc
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    if len(os.fsencode(tmp)) >= 107:
        raise DaemonError(f"control socket path too long for a Unix socket: {path}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        sock.bind(str(tmp))
        if gid is not None:
            os.chown(tmp, -1, gid)
        os.chmod(tmp, 0o660 if gid is not None else 0o600)
        os.rename(tmp, path)
        sock.listen(_MAX_CLIENTS)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise DaemonError(f"cannot create the control socket {path}: {exc.strerror or exc}") from exc
    return sock


# ------------------------------------------------------------------------------------- client


def request(
    socket_path: Path, command: str, *, timeout_s: float = 3.0, args: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Send one command to the running daemon and return its answer (blocking; for the CLI).

    Args:
        socket_path: the control socket (see :func:`default_socket_path`).
        command: one of :data:`COMMANDS`.
        timeout_s: for connecting and for the answer.
        args: optional arguments of the command.

    Returns:
        The daemon's answer, with ``"ok": True``.

    Raises:
        DaemonError: the daemon is not running (no socket, or nobody listening), permission is
            denied, it did not answer in time, the answer was malformed, or it refused the command
            (the message says which, in words for the user).
    """
    line = json.dumps({"cmd": command, "args": dict(args or {})}).encode() + b"\n"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        try:
            sock.connect(str(socket_path))
        except FileNotFoundError as exc:
            raise DaemonError(f"earshot is not running (no control socket at {socket_path})") from exc
        except ConnectionRefusedError as exc:
            raise DaemonError(f"earshot is not running (nothing listens on {socket_path})") from exc
        except PermissionError as exc:
            raise DaemonError(
                f"permission denied on {socket_path}: run as the daemon's user or root, or join the group"
                " named in control.group"
            ) from exc
        except TimeoutError as exc:
            raise DaemonError(f"earshot did not accept the connection on {socket_path} within {timeout_s:g} s") from exc
        except OSError as exc:
            raise DaemonError(f"cannot reach earshot at {socket_path}: {exc.strerror or exc}") from exc
        try:
            sock.sendall(line)
            data = _read_line(sock)
        except TimeoutError as exc:
            raise DaemonError(f"earshot did not answer {command!r} within {timeout_s:g} s") from exc
        except OSError as exc:
            raise DaemonError(f"lost the connection to earshot: {exc.strerror or exc}") from exc
    finally:
        sock.close()
    try:
        response = json.loads(data)
    except ValueError as exc:
        raise DaemonError("earshot sent a malformed answer") from exc
    if not isinstance(response, dict):
        raise DaemonError("earshot sent a malformed answer")
    if response.get("ok") is not True:
        raise DaemonError(str(response.get("error") or "earshot refused the command"))
    return response


def follow(socket_path: Path, *, timeout_s: float = 3.0) -> Iterator[dict[str, Any]]:
    """``earshot follow``: yield the daemon's events as they happen, until it goes away (blocking).

    Raises:
        DaemonError: as :func:`request` (not running, refused, no answer).
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    lines = sock.makefile("rb")
    try:
        try:
            sock.connect(str(socket_path))
            sock.sendall(b'{"cmd": "follow"}\n')
            first = json.loads(lines.readline(1 << 20))
        except FileNotFoundError as exc:
            raise DaemonError(f"earshot is not running (no control socket at {socket_path})") from exc
        except ConnectionRefusedError as exc:
            raise DaemonError(f"earshot is not running (nothing listens on {socket_path})") from exc
        except (OSError, ValueError) as exc:
            raise DaemonError(f"cannot follow earshot at {socket_path}: {exc}") from exc
        if not isinstance(first, dict) or first.get("ok") is not True:
            error = first.get("error") if isinstance(first, dict) else None
            raise DaemonError(str(error or "earshot refused to be followed"))
        sock.settimeout(None)
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                yield event
    finally:
        lines.close()
        sock.close()


def _read_line(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise OSError(errno.ECONNRESET, "the daemon closed the connection without answering")
        chunks.append(chunk)
        size += len(chunk)
        if b"\n" in chunk:
            return b"".join(chunks).split(b"\n", 1)[0]
        if size > limit:
            raise OSError(errno.EMSGSIZE, "answer too long")
