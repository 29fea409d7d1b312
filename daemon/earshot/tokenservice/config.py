"""The token service's configuration (``/etc/earshot/token-service.yaml``): typed, checked like the daemon's.

Every key is documented in ``config/token-service.yaml``; a problem names its key and line (exit 78).
The real API key is never in the file: ``$CREDENTIALS_DIRECTORY/openai-api-key``,
``$OPENAI_API_KEY`` or ``upstream.key_file``.
"""

# RUF009: ``_f`` and ``_section`` return ``dataclasses.field(...)`` (see earshot.config.schema).
# ruff: noqa: RUF009

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from earshot.config.fields import _f, _section
from earshot.config.load import Problems, is_loopback, load_document

__all__ = [
    "LimitsConfig",
    "ListenConfig",
    "PinnedSessionConfig",
    "TokenServiceConfig",
    "UpstreamConfig",
    "load_service_config",
]


@dataclass(frozen=True, slots=True)
class ListenConfig:
    """Where devices reach the service."""

    host: str = _f("127.0.0.1", "address to listen on")
    port: int = _f(8443, "TCP port (0 picks a free one)", min=0, max=65535)
    cert_file: Path | None = _f(None, "server certificate chain (PEM); null = plain HTTP, allowed only on loopback")
    key_file: Path | None = _f(None, "the server certificate's private key (PEM)")
    client_ca_file: Path | None = _f(
        None, "CA of device client certificates: a verified certificate's common name is its device id"
    )
    max_connections: int = _f(512, "connections open at once; more are answered 503", min=1, max=100000)


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """Where the real secrets are minted."""

    url: str = _f("https://api.openai.com/v1/realtime/client_secrets", "the Realtime client_secrets endpoint")
    key_file: Path | None = _f(None, "file holding the API key (after $CREDENTIALS_DIRECTORY and $OPENAI_API_KEY)")
    timeout_s: float = _f(10.0, "timeout of one upstream request", min=1.0, max=120.0)
    max_in_flight: int = _f(32, "upstream requests at once; more wait their turn", min=1, max=1024)


@dataclass(frozen=True, slots=True)
class PinnedSessionConfig:
    """What every minted session gets, whatever a device asks."""

    model: str = _f("gpt-realtime", "the model")
    instructions: str | None = _f(None, "the instructions; null = the device's own")
    tools: tuple[str, ...] | None = _f(None, "function names and MCP server labels a device may offer; null = any")


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """What one device may take."""

    per_minute: float = _f(6.0, "secrets per minute, sustained", min=0.01, max=6000.0)
    burst: int = _f(5, "secrets back to back", min=1, max=10000)
    daily: int = _f(2000, "secrets per UTC day", min=1, max=10_000_000)
    ttl_s: int = _f(120, "longest lifetime of a secret (a device asking more gets this)", min=10, max=7200)


@dataclass(frozen=True, slots=True)
class TokenServiceConfig:
    """The whole file."""

    listen: ListenConfig = _section(ListenConfig, "where devices reach the service")
    upstream: UpstreamConfig = _section(UpstreamConfig, "where the real secrets are minted")
    session: PinnedSessionConfig = _section(PinnedSessionConfig, "what every minted session gets")
    limits: LimitsConfig = _section(LimitsConfig, "what one device may take")
    devices_file: Path = _f(
        Path("/var/lib/earshot-token-service/devices.json"),
        "the enrolled devices (earshot token-service enrol/revoke); re-read whenever it changes",
    )
    state_file: Path | None = _f(
        Path("/var/lib/earshot-token-service/state.json"), "today's counts per device, kept across restarts"
    )


def _check(cfg: TokenServiceConfig, problems: Problems) -> None:
    listen = cfg.listen
    if (listen.cert_file is None) != (listen.key_file is None):
        problems.add("listen.cert_file", "cert_file and key_file go together")
    if listen.cert_file is None and not is_loopback(listen.host):
        problems.add("listen.host", "plain HTTP only on a loopback address: set listen.cert_file and key_file")
    if listen.client_ca_file is not None and listen.cert_file is None:
        problems.add("listen.client_ca_file", "client certificates need TLS: set listen.cert_file and key_file")
    url = urllib.parse.urlsplit(cfg.upstream.url)
    if url.scheme not in ("https", "http") or not url.hostname:
        problems.add("upstream.url", "must be an https:// URL")
    elif url.scheme == "http" and not is_loopback(url.hostname):
        problems.add("upstream.url", "plain http:// is allowed only to a loopback address")
    if not cfg.session.model.strip():
        problems.add("session.model", "must not be empty")


def load_service_config(path: str | Path) -> TokenServiceConfig:
    """Read and check the token service's config file.

    Raises:
        ConfigError: every problem, each naming its key and line.
    """
    return load_document(path, TokenServiceConfig, _check)
