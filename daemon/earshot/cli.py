"""The ``earshot`` command.

::

    earshot [--log-level LEVEL] run [--config FILE]        the daemon, in the foreground (systemd's ExecStart)
    earshot check-config [FILE]                            validate a config: exit 0, or 78 with the problems
    earshot devices [--json]                               ALSA PCMs: capture/playback, supported rates
    earshot version
    earshot doctor [--config FILE] [--json]                try each native part in a child; record what works
    earshot emulate [--host H] [--port N] ...              the local Realtime API emulator
    earshot token-service run|enrol|revoke|list ...        the fleet's token service
    earshot engage | cancel | mute | unmute | stop | timers | volume [N|up|down|mute|unmute]
    earshot say TEXT [--listen] [--interrupt]
    earshot status [--json] | follow [--json]                       talk to the running daemon
    earshot enroll ...                                     record wake-word templates

Exit codes: 0 ok, 1 runtime failure, 2 usage error, 78 (EX_CONFIG) configuration error. The
subcommands backed by optional parts (devices, emulate, control, enroll, run) import them only
when used, so ``check-config`` works on a machine without ALSA or a network stack.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from earshot.errors import EX_CONFIG, ConfigError, DaemonError

__all__ = ["EX_CONFIG", "EX_OK", "EX_RUNTIME", "EX_USAGE", "default_socket_path", "main"]

logger = logging.getLogger(__name__)

EX_OK = 0
EX_RUNTIME = 1
EX_USAGE = 2

DEFAULT_CONFIG = Path("/etc/earshot/earshot.yaml")
_CONTROL_COMMANDS = ("engage", "cancel", "status", "mute", "unmute", "stop", "timers", "volume", "say")
_LEVELS = ("debug", "info", "warning", "error")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``earshot`` command line; returns the process exit status."""
    parser = _parser()
    # emulate and enroll hand every argument after their name to the delegate's own parser.
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.argv = extra
    if args.version:
        return _cmd_version(args)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EX_USAGE
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="earshot",
        description="Voice-appliance daemon: local wake word and VAD gate, OpenAI Realtime API only while engaged.",
        epilog="exit status: 0 ok, 1 runtime failure, 2 usage error, 78 configuration error",
    )
    parser.add_argument(
        "--log-level",
        type=str.lower,
        choices=_LEVELS,
        default=None,
        help="log level (default: logging.level from the config, else info)",
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("run", help="run the daemon in the foreground")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    p.set_defaults(handler=_cmd_run)

    p = sub.add_parser("check-config", help="validate a config file (exit 0, or 78 with one line per problem)")
    p.add_argument("file", type=Path, nargs="?", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    p.set_defaults(handler=_cmd_check_config)

    p = sub.add_parser("devices", help="list ALSA PCM devices with capture/playback capability and rates")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_cmd_devices)

    p = sub.add_parser("tool-exec", help="answer one tool call on the socket passed as stdin (earshot-tools@.service)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    p.set_defaults(handler=_cmd_tool_exec)

    parser.add_argument(
        "--version", action="store_true", help="print the versions of earshot, its engines and models, and exit"
    )
    p = sub.add_parser("version", help="print the versions of earshot, its engines and their models")
    p.set_defaults(handler=_cmd_version)

    p = sub.add_parser("doctor", help="try each configured native part in a child process and record what works")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    p.add_argument("--state-dir", type=Path, default=None, help="where the record goes (default: the daemon's)")
    p.add_argument("--json", action="store_true", help="print the record as JSON")
    p.add_argument("--timeout", type=float, default=None, help="seconds a probe may take before it counts as hung (60)")
    p.add_argument("--probe", default=None, help=argparse.SUPPRESS)  # the child's side of one probe
    p.set_defaults(handler=_cmd_doctor)

    p = sub.add_parser("emulate", help="run the local Realtime API emulator (arguments go to it)", add_help=False)
    p.set_defaults(handler=_cmd_emulate, passthrough=True)

    p = sub.add_parser(
        "token-service", help="the fleet's token service: run, enrol, revoke, list (arguments go to it)", add_help=False
    )
    p.set_defaults(handler=_cmd_token_service, passthrough=True)

    p = sub.add_parser("enroll", help="record wake-word templates (arguments go to the enroller)", add_help=False)
    p.set_defaults(handler=_cmd_enroll, passthrough=True)

    helps = {
        "engage": "start listening now, as if the wake word was heard",
        "cancel": "end the current engagement (stop speaking, close the session)",
        "status": "show what the running daemon is doing",
        "mute": "mute the microphone (nothing is heard, nothing is sent)",
        "unmute": "unmute the microphone",
        "stop": "stop what sounds: a ringing timer, else the reply in progress",
        "timers": "list the timers and alarms set on the device",
        "volume": "show or set the speaker volume: 0-100, +N, -N, up, down, mute, unmute (kept across restarts)",
        "say": "say TEXT on the device now, without a wake word (queued behind an exchange in progress)",
    }
    p = sub.add_parser("follow", help="print the daemon's events as they happen (phases, turns, transcripts, timers)")
    p.add_argument("--socket", type=Path, default=None, help="control socket (default: from the config)")
    p.add_argument("--config", type=Path, default=None, help=f"config naming the socket (default {DEFAULT_CONFIG})")
    p.add_argument("--json", action="store_true", help="one JSON object a line, as the daemon sends them")
    p.set_defaults(handler=_cmd_follow, command="follow")

    for name in _CONTROL_COMMANDS:
        p = sub.add_parser(name, help=helps[name])
        p.add_argument("--socket", type=Path, default=None, help="control socket (default: from the config)")
        p.add_argument("--config", type=Path, default=None, help=f"config naming the socket (default {DEFAULT_CONFIG})")
        if name in ("status", "timers"):
            p.add_argument("--json", action="store_true", help="print the raw JSON answer")
        if name == "volume":
            p.add_argument("value", nargs="?", default=None, help="0-100, +N, -N, up, down, mute or unmute")
        if name == "say":
            p.add_argument("text", nargs="+", help="what to say")
            p.add_argument("--listen", action="store_true", help="then listen for an answer (a follow-up window)")
            p.add_argument("--interrupt", action="store_true", help="cut an exchange in progress instead of waiting")
        p.set_defaults(handler=_cmd_control, command=name)
    return parser


# ------------------------------------------------------------------------------------ commands


def _load(module: str, name: str) -> Callable[..., Any]:
    """Import ``module.name`` lazily (optional parts; an edge module may be missing on this machine).

    Raises:
        ImportError: the module or the attribute is missing.
    """
    target = getattr(importlib.import_module(module), name, None)
    if not callable(target):
        raise ImportError(f"{module} has no {name}()")
    return cast("Callable[..., Any]", target)


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


def _print_config_error(exc: ConfigError) -> None:
    for problem in exc.problems:
        _err(problem)


def _cmd_check_config(args: argparse.Namespace) -> int:
    from earshot.config import load_config

    try:
        load_config(args.file)
    except ConfigError as exc:
        _print_config_error(exc)
        return EX_CONFIG
    _out(f"{args.file}: ok")
    return EX_OK


def _config_or_none(path: Path) -> Any:
    """The validated config at ``path``, or None after printing why not (the caller exits 78)."""
    from earshot.config import load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        _print_config_error(exc)
        return None


def _cmd_run(args: argparse.Namespace) -> int:
    from earshot.process import bound_malloc

    bound_malloc()  # before the config, the engines and the models are loaded (earshot.process)
    from earshot import logs

    # The whole config is validated before anything touches a device or the network.
    config = _config_or_none(args.config)
    if config is None:
        return EX_CONFIG
    logs.configure(args.log_level or config.logging.level, config.logging.journald, fmt=config.logging.format)
    try:
        serve = _load("earshot.app", "serve")
    except ImportError as exc:
        logger.error("cannot start: %s", exc)
        return EX_RUNTIME
    return _as_status(serve(config, config_path=args.config))


def _cmd_tool_exec(args: argparse.Namespace) -> int:
    import asyncio

    from earshot import logs
    from earshot.config import load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        _print_config_error(exc)
        return EX_CONFIG
    logs.configure(args.log_level or config.logging.level, config.logging.journald, fmt=config.logging.format)
    serve = _load("earshot.toolexec", "serve_stdin")
    return _as_status(asyncio.run(serve(args.config)))


def _cmd_version(args: argparse.Namespace) -> int:
    report = _load("earshot.versions", "report")
    for line in report():
        _out(line)
    return EX_OK


def _cmd_doctor(args: argparse.Namespace) -> int:
    from earshot import doctor

    config = _config_or_none(args.config)
    if config is None:
        return EX_CONFIG
    if args.state_dir is not None:
        sdir = args.state_dir
    else:
        from earshot.app import state_dir

        sdir = state_dir(config)
    if args.probe is not None:  # the child: one probe, one JSON line
        _out(json.dumps(doctor.run_probe(args.probe, config, sdir)))
        return EX_OK
    timeout_s = doctor.PROBE_TIMEOUT_S if args.timeout is None else args.timeout
    findings = doctor.run_doctor(config, args.config, os.environ, sdir, timeout_s=timeout_s)
    record = doctor.record_of(findings, time.time())
    try:
        where = f"recorded in {doctor.save_record(sdir, record)}"
    except OSError as exc:
        where = f"not recorded ({exc.strerror or exc}): the daemon will load every part"
    if args.json:
        _out(json.dumps(record, indent=1))
    else:
        _out(f"earshot doctor ({args.config})")
        for f in findings:
            _out(f"  {f.name:<10} {f.status:<8} {f.subject + ': ' if f.subject else ''}{f.detail}")
        _out(f"  {where}")
    return EX_RUNTIME if doctor.failed(findings) else EX_OK


def _cmd_emulate(args: argparse.Namespace) -> int:
    return _delegate(args, "earshot.emulator", "emulate")


def _cmd_token_service(args: argparse.Namespace) -> int:
    return _delegate(args, "earshot.tokenservice.cli", "token-service", own_logging=True)


def _cmd_enroll(args: argparse.Namespace) -> int:
    return _delegate(args, "earshot.gate.enroll", "enroll")


def _delegate(args: argparse.Namespace, module: str, command: str, *, own_logging: bool = False) -> int:
    """Run ``module.main`` with the arguments after the command's name (its own parser and help)."""
    if not own_logging:
        _configure_cli_logging(args)
    try:
        delegate_main = _load(module, "main")
    except ImportError as exc:
        _err(f"earshot {command}: not available here: {exc}")
        return EX_RUNTIME
    return _as_status(delegate_main(list(args.argv)))


def _cmd_devices(args: argparse.Namespace) -> int:
    _configure_cli_logging(args)
    try:
        list_devices = _load("earshot.audio.alsa", "list_devices")
    except ImportError as exc:
        _err(f"earshot devices: ALSA support is not available: {exc}")
        return EX_RUNTIME
    try:
        devices = [_device_dict(d) for d in list_devices()]
    except OSError as exc:  # AudioDeviceError is an OSError
        _err(f"earshot devices: {exc}")
        return EX_RUNTIME
    if args.json:
        _out(json.dumps(devices, indent=2))
        return EX_OK
    if not devices:
        _out("no ALSA PCM devices found")
        return EX_OK
    for d in devices:
        caps = "/".join(c for c in ("capture", "playback") if d[c]) or "-"
        _out(f"{d['name']}  [{caps}]")
        if d["description"]:
            _out(f"    {d['description']}")
        for direction in ("capture", "playback"):
            rates = d[f"{direction}_rates"]
            if d[direction] and rates:
                _out(f"    {direction} rates: {', '.join(str(r) for r in rates)} Hz")
    return EX_OK


def _device_dict(device: Any) -> dict[str, Any]:
    """Normalise a device record from ``earshot.audio.alsa.list_devices`` (attributes or a mapping)."""

    def get(name: str, default: Any = None) -> Any:
        if isinstance(device, dict):
            return device.get(name, default)
        return getattr(device, name, default)

    rates = get("rates")
    capture_rates = get("capture_rates", rates) or ()
    playback_rates = get("playback_rates", rates) or ()
    return {
        "name": str(get("name", "?")),
        "description": str(get("description", "") or ""),
        "capture": bool(get("can_capture", get("capture", bool(capture_rates)))),
        "playback": bool(get("can_play", get("playback", bool(playback_rates)))),
        "capture_rates": [int(r) for r in capture_rates],
        "playback_rates": [int(r) for r in playback_rates],
    }


def default_socket_path(config_socket: Path | None = None) -> Path:
    """The control socket: the config's ``control.socket``, else ``$RUNTIME_DIRECTORY``, else /run/earshot."""
    if config_socket is not None:
        return config_socket
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(runtime or "/run/earshot") / "control.sock"


def _control_socket(args: argparse.Namespace) -> Path:
    if args.socket is not None:
        return Path(args.socket)
    config_path = args.config if args.config is not None else DEFAULT_CONFIG
    if args.config is not None or config_path.exists():
        from earshot.config import load_config

        # A config that names the socket must be valid to be trusted; problems are exit 78.
        return default_socket_path(load_config(config_path).control.socket)
    return default_socket_path()


def _socket_or_exit(args: argparse.Namespace) -> Path | int:
    """The control socket the command talks to, or the exit status of a bad config naming it."""
    _configure_cli_logging(args)
    try:
        return _control_socket(args)
    except ConfigError as exc:
        _print_config_error(exc)
        return EX_CONFIG


def _cmd_control(args: argparse.Namespace) -> int:
    path = _socket_or_exit(args)
    if isinstance(path, int):
        return path
    try:
        request = _load("earshot.control", "request")
    except ImportError as exc:
        _err(f"earshot {args.command}: the control client is not available: {exc}")
        return EX_RUNTIME
    try:
        extra: dict[str, Any] | None = {"set": args.value} if getattr(args, "value", None) is not None else None
        if args.command == "say":
            extra = {"text": " ".join(args.text), "listen": args.listen, "interrupt": args.interrupt}
        answer: dict[str, Any] = request(path, args.command, args=extra)
    except (DaemonError, OSError, TimeoutError) as exc:
        # control.request says in words what went wrong (not running, refused, timed out).
        _err(f"earshot {args.command}: {exc}")
        return EX_RUNTIME
    ok = bool(answer.get("ok", True))
    if args.command in ("status", "timers") and getattr(args, "json", False):
        _out(json.dumps(answer, indent=2, sort_keys=True, default=str))
    elif not ok:
        _err(f"earshot {args.command}: {answer.get('error') or answer}")
    elif args.command == "status":
        for key, value in answer.items():
            if key != "ok":
                _out(f"{key}: {json.dumps(value, default=str) if isinstance(value, (dict, list)) else value}")
    elif args.command == "timers":
        for timer in answer.get("timers") or []:
            label = f" {timer.get('label')}" if timer.get("label") else ""
            _out(
                f"{timer.get('id')}  {timer.get('kind')}{label}: {timer.get('state')}, due {timer.get('due')}"
                f" (in {timer.get('remaining_s')} s)"
            )
        if not answer.get("timers"):
            _out("no timers")
    elif args.command == "volume":
        _out(f"volume {answer.get('volume')}%{' (muted)' if answer.get('muted') else ''} ({answer.get('control')})")
    elif args.command == "say":
        place = answer.get("queued")
        _out("saying it now" if place == 0 else f"queued: {place} before it")
    elif args.command == "stop":
        _out(f"stopped {len(answer.get('stopped') or [])} ringing timer(s); phase {answer.get('phase')}")
    elif answer.get("message"):
        _out(answer["message"])
    return EX_OK if ok else EX_RUNTIME


def _cmd_follow(args: argparse.Namespace) -> int:
    path = _socket_or_exit(args)
    if isinstance(path, int):
        return path
    follow = _load("earshot.control", "follow")
    try:
        for event in follow(path):
            _out(json.dumps(event, sort_keys=True) if args.json else _event_line(event))
    except DaemonError as exc:
        _err(f"earshot follow: {exc}")
        return EX_RUNTIME
    except KeyboardInterrupt:
        return EX_OK
    return EX_OK


def _event_line(event: dict[str, Any]) -> str:
    """One event for people: the time, the event, and what matters of its data."""
    import time

    stamp = time.strftime("%H:%M:%S", time.localtime(float(event.get("t", 0))))
    name = str(event.get("event", "?"))
    raw = event.get("data")
    data: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if name == "transcript":
        mark = "" if data.get("final") else " …"
        detail = f"{data.get('role')}: {data.get('text')}{mark}"
    elif "label" in data or "id" in data:
        detail = " ".join(str(data[k]) for k in ("id", "label", "reason") if data.get(k))
    elif "reason" in data:
        detail = str(data["reason"])
    else:
        detail = ""
    lost = f"  ({event['dropped']} events lost)" if event.get("dropped") else ""
    return f"{stamp}  {name}{'  ' + detail if detail else ''}{lost}"


# ------------------------------------------------------------------------------------- helpers


def _configure_cli_logging(args: argparse.Namespace) -> None:
    from earshot import logs

    logs.configure(args.log_level or "warning", "off")


def _as_status(result: object) -> int:
    """Map what a delegated ``main()`` returned to an exit status (None means success)."""
    if result is None:
        return EX_OK
    if isinstance(result, bool):
        return EX_OK if result else EX_RUNTIME
    if isinstance(result, int):
        return result
    return EX_RUNTIME
