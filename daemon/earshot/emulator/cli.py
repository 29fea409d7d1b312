"""``earshot emulate``: run the Realtime emulator in the foreground until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import signal
from collections.abc import Sequence

from earshot.emulator.options import WAKE_WORD_REPLY, DefaultScript, EmulatorOptions, Faults, FunctionCall
from earshot.emulator.server import Emulator

logger = logging.getLogger(__name__)

_FAULT_TYPES = {f.name: f.type for f in dataclasses.fields(Faults)}


def parse_call(text: str) -> tuple[int, FunctionCall]:
    """``TURN:NAME:JSON`` (``1:set_timer:{"seconds": 10}``): the model calls NAME on that user turn."""
    turn, sep, rest = text.partition(":")
    name, sep2, arguments = rest.partition(":")
    if not sep or not sep2 or not turn.isdigit() or int(turn) < 1 or not name:
        raise argparse.ArgumentTypeError(f"expected TURN:NAME:JSON, got {text!r}")
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"the arguments of {name} are not JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(f"the arguments of {name} must be a JSON object")
    return int(turn), FunctionCall(name, parsed)


def parse_fault(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` for one :class:`Faults` field, the value converted to the field's type.

    Raises:
        argparse.ArgumentTypeError: unknown key or bad value.
    """
    key, sep, raw = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or key not in _FAULT_TYPES:
        raise argparse.ArgumentTypeError(f"--fault wants KEY=VALUE with KEY one of {', '.join(_FAULT_TYPES)}")
    kind = str(_FAULT_TYPES[key])
    value: object
    try:
        if raw.lower() in ("none", "off", ""):
            value = None
        elif kind.startswith("int"):
            value = int(raw)
        elif kind.startswith("float"):
            value = float(raw)
        elif kind.startswith("bool"):
            value = raw.lower() in ("1", "true", "yes", "on")
        else:
            value = raw
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--fault {key}: {exc}") from exc
    return key, value


def build_parser() -> argparse.ArgumentParser:
    """The ``earshot emulate`` argument parser."""
    parser = argparse.ArgumentParser(prog="earshot emulate", description="Run a local Realtime API emulator.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="TCP port (0: any free port; default 8765)")
    parser.add_argument("--api-key", help="the only accepted bearer key (default: any non-empty key)")
    parser.add_argument(
        "--secrets-port",
        type=int,
        default=None,
        help="also serve POST /v1/realtime/client_secrets on this port (0: any free port; default: off)",
    )
    parser.add_argument("--expires-s", type=float, default=3600.0, help="session lifetime before session_expired")
    parser.add_argument("--reply-rate", type=float, default=4.0, help="reply audio speed vs real time (default 4)")
    parser.add_argument("--chunk-ms", type=int, default=100, help="audio per output_audio.delta (default 100)")
    parser.add_argument("--voice", default="auto", choices=["auto", "flite", "espeak-ng", "tone"])
    parser.add_argument("--reply", action="append", default=[], help="scripted reply text for turn 1, 2, … (repeat)")
    parser.add_argument(
        "--call",
        action="append",
        default=[],
        type=parse_call,
        metavar="TURN:NAME:JSON",
        help="the model calls function NAME with JSON arguments on user turn TURN (repeat)",
    )
    parser.add_argument("--wake-word-reply", action="store_true", help="reply with a sentence that says 'Jarvis'")
    parser.add_argument("--strict", action="store_true", help="validate every event sent against the SDK types")
    parser.add_argument("--fault", action="append", default=[], type=parse_fault, help="KEY=VALUE fault knob (repeat)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every client event (DEBUG)")
    return parser


async def _serve(options: EmulatorOptions) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Emulator(options) as emulator:
            print(emulator.url, flush=True)  # noqa: T201 - the one line a script waits for
            if options.secrets_port is not None:
                print(emulator.secrets_url, flush=True)  # noqa: T201 - and the token endpoint's
            await stop.wait()
            logger.info(
                "stopping on signal; %d sessions, %d violations", len(emulator.sessions), len(emulator.violations)
            )
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``earshot emulate`` with ``argv`` (without the program and sub-command names).

    Returns:
        The exit status: 0 after SIGTERM/SIGINT, 2 on bad arguments, 1 if the port cannot be bound.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    faults = Faults()
    for key, value in args.fault:
        setattr(faults, key, value)
    replies = list(args.reply) + ([WAKE_WORD_REPLY] if args.wake_word_reply else [])
    options = EmulatorOptions(
        host=args.host,
        port=args.port,
        secrets_port=args.secrets_port,
        api_key=args.api_key,
        strict=args.strict,
        session_expires_s=args.expires_s,
        reply_rate=args.reply_rate,
        chunk_ms=args.chunk_ms,
        voice_engine=args.voice,
        script=DefaultScript(replies, calls=dict(args.call)),
        faults=faults,
    )
    try:
        asyncio.run(_serve(options))
    except OSError as exc:
        logger.error("cannot listen on %s:%s: %s", args.host, args.port, exc)
        return 1
    return 0
