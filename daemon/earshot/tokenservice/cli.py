"""``earshot token-service`` (also ``earshot-token-service``): run the service, enrol and revoke devices.

::

    earshot token-service run [--config F]                      serve (systemd: Type=notify)
    earshot token-service enrol ID [--room R] [--site S] [--certificate] [--token-file F]
    earshot token-service revoke ID                             refused from its next request on
    earshot token-service list [--json]

``enrol`` prints the device's new token once (or writes it, mode 0600, to ``--token-file``): it
goes into the device's credential file (``/etc/earshot/openai-api-key``, where the key would
be). Enrolling a device again gives it a new token and un-revokes it. Exit codes: 0 ok,
1 runtime failure, 2 usage error, 78 configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from earshot.errors import EX_CONFIG, AuthenticationError, ConfigError
from earshot.tokenservice.config import TokenServiceConfig, load_service_config
from earshot.tokenservice.registry import (
    Device,
    Registry,
    RegistryError,
    check_device_id,
    hash_token,
    new_token,
    parse_registry,
)
from earshot.tokenservice.server import TokenService, write_registry

__all__ = ["DEFAULT_CONFIG", "main"]

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = Path("/etc/earshot/token-service.yaml")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="earshot token-service", description="Ephemeral Realtime secrets for devices."
    )
    # --config and --log-level are taken before or after the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=f"default {DEFAULT_CONFIG}")
    common.add_argument("--log-level", default=argparse.SUPPRESS, choices=("debug", "info", "warning", "error"))
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="serve devices", parents=[common])
    p = sub.add_parser("enrol", help="enrol a device (or give it a new token); prints the token", parents=[common])
    p.add_argument("device")
    p.add_argument("--room", help="label: the room")
    p.add_argument("--site", help="label: the site")
    p.add_argument("--certificate", action="store_true", help="it may also authenticate with a client certificate")
    p.add_argument("--no-token", action="store_true", help="certificate only: no token")
    p.add_argument("--token-file", type=Path, help="write the token here (mode 0600) instead of printing it")
    p = sub.add_parser("revoke", help="refuse a device from its next request on", parents=[common])
    p.add_argument("device")
    p = sub.add_parser("list", help="the enrolled devices", parents=[common])
    p.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_service_config(args.config)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            _err(f"earshot token-service: {line}")
        return EX_CONFIG
    if args.command == "run":
        return _run(cfg)
    try:
        registry = parse_registry(cfg.devices_file.read_bytes()) if cfg.devices_file.exists() else Registry()
    except (OSError, RegistryError) as exc:
        _err(f"earshot token-service: {cfg.devices_file}: {exc}")
        return 1
    if args.command == "list":
        return _list(registry, as_json=args.json)
    problem = check_device_id(args.device)
    if problem is not None:
        parser.error(f"device id {args.device!r}: {problem}")
    if args.command == "revoke":
        if args.device not in registry.devices:
            _err(f"earshot token-service: no device {args.device!r}")
            return 1
        write_registry(cfg.devices_file, registry.revoked(args.device))
        _out(f"revoked {args.device}")
        return 0
    return _enrol(cfg, registry, args)


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


def _enrol(cfg: TokenServiceConfig, registry: Registry, args: argparse.Namespace) -> int:
    if args.no_token and not args.certificate:
        _err("earshot token-service: --no-token needs --certificate")
        return 2
    old = registry.devices.get(args.device)
    labels = dict(old.labels) if old else {}
    for name in ("room", "site"):
        if getattr(args, name):
            labels[name] = getattr(args, name)
    token = None if args.no_token else new_token()
    device = Device(
        args.device,
        token_sha256=hash_token(token) if token else None,
        certificate=args.certificate or (old.certificate if old else False),
        labels=labels,
    )
    cfg.devices_file.parent.mkdir(parents=True, exist_ok=True)
    if token is not None and args.token_file is not None:
        from earshot.usage import atomic_write

        atomic_write(args.token_file, token + "\n", mode=0o600)
    write_registry(cfg.devices_file, registry.with_device(device))
    if token is not None and args.token_file is None:
        _out(token)
    else:
        _err(f"enrolled {args.device}")
    return 0


def _list(registry: Registry, *, as_json: bool) -> int:
    rows = [
        {
            "device": d.id,
            "token": d.token_sha256 is not None,
            "certificate": d.certificate,
            "revoked": d.revoked,
            **d.labels,
        }
        for d in sorted(registry.devices.values(), key=lambda d: d.id)
    ]
    if as_json:
        _out(json.dumps(rows, indent=2))
    else:
        for row in rows:
            state = "revoked" if row["revoked"] else "active"
            how = "+".join(k for k in ("token", "certificate") if row[k]) or "none"
            _out(f"{row['device']:<24} {state:<8} {how:<18} {row.get('room', '')} {row.get('site', '')}".rstrip())
    return 0


def _run(cfg: TokenServiceConfig) -> int:
    try:
        asyncio.run(_serve(cfg))
    except (AuthenticationError, RegistryError) as exc:
        _err(f"earshot token-service: {exc}")
        return 1
    except OSError as exc:
        _err(f"earshot token-service: {exc}")
        return 1
    return 0


async def _serve(cfg: TokenServiceConfig) -> None:
    from earshot.systemd import Notifier

    loop = asyncio.get_running_loop()
    # Upstream requests run in threads: as many as may be in flight, not the default few.
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(cfg.upstream.max_in_flight + 4))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with TokenService(cfg) as service:
            logger.info("serving %s", service.url)
            _out(service.url)  # the one line a script waits for
            Notifier().ready(f"serving {service.url}")
            await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):
                loop.remove_signal_handler(sig)
