"""Credentials for the Realtime API: the API key's sources and ephemeral client secrets.

The key is looked for in this order (DESIGN.md)::

    $CREDENTIALS_DIRECTORY/openai-api-key    systemd LoadCredential= / LoadCredentialEncrypted=
    $OPENAI_API_KEY                          the environment (EnvironmentFile=)
    realtime.auth.key_file                   a file named in the config

With ``realtime.auth.token_url`` set, a short-lived client secret (``ek_…``) is minted per
(re)connect by POSTing ``{expires_after, session}`` there (PROTOCOL.md §1.4): OpenAI's
``/v1/realtime/client_secrets`` authenticated with the key, or a fleet backend that holds the
real key, in which case the device holds no key at all or only a device token.

Every credential is a :class:`Secret`, whose ``repr``/``str`` never show the value; only
:meth:`Secret.reveal` does, and only :func:`headers_for` and the token request call it. The value
never reaches a log record, an exception text or the status output (use :func:`fingerprint`).

Stdlib only: the token request is ``urllib.request`` in a worker thread with a total deadline.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import json
import logging
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from earshot.config import AuthConfig
from earshot.config.load import is_loopback
from earshot.errors import AuthenticationError, ConfigError, RealtimeError

__all__ = [
    "CREDENTIAL_NAME",
    "Secret",
    "TokenEndpointError",
    "client_tls",
    "connection_secret",
    "credential_mtime",
    "fingerprint",
    "headers_for",
    "mint_client_secret",
    "post",
    "read_secret_file",
    "resolve_key",
    "token_tls",
]

logger = logging.getLogger(__name__)

CREDENTIAL_NAME = "openai-api-key"
"""File name of the key inside ``$CREDENTIALS_DIRECTORY`` (``LoadCredential=openai-api-key:…``)."""

ENV_KEY = "OPENAI_API_KEY"

_MAX_KEY_FILE_BYTES = 64 * 1024
_MAX_RESPONSE_BYTES = 1024 * 1024
# Anything in a server's error text that looks like a credential (OpenAI echoes a masked key in
# "Incorrect API key provided: sk-abc***wxyz").
_TOKEN_RE = re.compile(r"\b(?:sk|ek|rk|sess)[-_][A-Za-z0-9_\-*.]{4,}")


class Secret:
    """A credential whose text form never shows its value.

    ``repr(Secret("sk-…", source="OPENAI_API_KEY"))`` is ``<secret from OPENAI_API_KEY, 51 chars>``.

    Args:
        value: the credential.
        source: where it came from (a path or a variable name), for messages.
        expires_at: for an ephemeral secret, its expiry (Unix seconds), when known.
    """

    __slots__ = ("_value", "expires_at", "source")

    def __init__(self, value: str, *, source: str, expires_at: float | None = None) -> None:
        self._value = value
        self.source = source
        self.expires_at = expires_at

    def reveal(self) -> str:
        """Return the value. Call it only to put the credential on the wire."""
        return self._value

    def __repr__(self) -> str:
        return f"<secret from {self.source}, {len(self._value)} chars>"

    __str__ = __repr__

    def __format__(self, format_spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(hashlib.sha256(self._value.encode()).digest())

    def __reduce__(self) -> Any:
        raise TypeError("a Secret is not picklable")


def fingerprint(secret: Secret) -> str:
    """A short, non-reversible tag of ``secret`` for status output and logs.

    It is the first 8 hex digits of the SHA-256 of the value, so an operator can check which key
    the device holds with ``printf %s "$KEY" | sha256sum`` without any character of it shown.
    """
    return "sha256:" + hashlib.sha256(secret.reveal().encode()).hexdigest()[:8]


def headers_for(secret: Secret) -> dict[str, str]:
    """The HTTP headers that authenticate a Realtime WebSocket (GA: no ``OpenAI-Beta``)."""
    return {"Authorization": f"Bearer {secret.reveal()}"}


# ------------------------------------------------------------------------------------- key sources


def _candidates(auth: AuthConfig, env: Mapping[str, str]) -> list[tuple[str, Path | None]]:
    """(label, path) in precedence order; path None means the environment variable."""
    out: list[tuple[str, Path | None]] = []
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        path = Path(cred_dir) / CREDENTIAL_NAME
        out.append((str(path), path))
    out.append((f"${ENV_KEY}", None))
    if auth.key_file is not None:
        out.append((str(auth.key_file), auth.key_file))
    return out


def _check_value(value: str) -> str | None:
    """Why ``value`` (already stripped) is not a usable key, or None. Never quotes the value."""
    if not value:
        return "is empty"
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return "holds whitespace or control characters inside the key (one key, nothing else)"
    if "=" in value:
        return "looks like NAME=value (an environment file); it must hold the bare key"
    if not value.isascii():
        return "holds non-ASCII characters"
    return None


def read_secret_file(path: Path) -> Secret:
    """A credential file holding one token (an MCP server's): stripped and checked as a key is.

    Raises:
        OSError: it cannot be read.
        ValueError: it is not one usable token (the text never quotes the content).
    """
    value = _read_key_file(path).strip()
    problem = _check_value(value)
    if problem is not None:
        raise ValueError(problem)
    return Secret(value, source=str(path))


def _read_key_file(path: Path) -> str:
    """Read a key file; raise OSError or ValueError (text never includes the content)."""
    with path.open("rb") as f:
        data = f.read(_MAX_KEY_FILE_BYTES + 1)
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise ValueError("is too large to be a key file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("is not UTF-8 text") from None


def resolve_key(auth: AuthConfig, env: Mapping[str, str]) -> Secret:
    """Find the API key: ``$CREDENTIALS_DIRECTORY/openai-api-key``, ``$OPENAI_API_KEY``, ``auth.key_file``.

    The first source that exists wins; surrounding whitespace is stripped. A source that exists
    but is unusable (unreadable, empty, several words) is skipped with a warning naming it.

    Args:
        auth: the ``realtime.auth`` section.
        env: the process environment (``os.environ``).

    Raises:
        AuthenticationError: no source holds a usable key; the text says where it looked and why
            each place failed, never any value.
    """
    tried: list[str] = []
    for label, path in _candidates(auth, env):
        if path is None:
            raw = env.get(ENV_KEY)
            if raw is None:
                tried.append(f"{label}: not set")
                continue
        else:
            try:
                raw = _read_key_file(path)
            except FileNotFoundError:
                tried.append(f"{label}: no such file")
                continue
            except IsADirectoryError:
                problem = "is a directory"
                tried.append(f"{label}: {problem}")
                logger.warning("API key source %s %s; skipped", label, problem)
                continue
            except OSError as exc:
                problem = f"cannot be read ({exc.strerror or type(exc).__name__})"
                tried.append(f"{label}: {problem}")
                logger.warning("API key source %s %s; skipped", label, problem)
                continue
            except ValueError as exc:
                tried.append(f"{label}: {exc}")
                logger.warning("API key source %s %s; skipped", label, exc)
                continue
        value = raw.strip()
        problem_text = _check_value(value)
        if problem_text is not None:
            tried.append(f"{label}: {problem_text}")
            logger.warning("API key source %s %s; skipped", label, problem_text)
            continue
        secret = Secret(value, source=label)
        logger.debug("API key from %s (%s)", label, fingerprint(secret))
        return secret
    raise AuthenticationError("no OpenAI API key found; looked in " + "; ".join(tried))


def credential_mtime(auth: AuthConfig, env: Mapping[str, str]) -> float | None:
    """The newest modification time of the key files that exist, or None when there are none.

    The app polls this while a "fatal for now" authentication error holds: a different value
    means the operator replaced the key, so it retries at once instead of waiting for the slow
    retry. The environment variable cannot change under a running process, so it is not watched.
    """
    newest: float | None = None
    for _label, path in _candidates(auth, env):
        if path is None:
            continue
        try:
            mtime = path.stat().st_mtime
        except OSError:
            continue
        newest = mtime if newest is None else max(newest, mtime)
    return newest


# -------------------------------------------------------------------------------- client secrets


def _redacted_url(url: str) -> str:
    """``url`` without userinfo, query or fragment (safe to log)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _scrub(text: str, key: Secret | None) -> str:
    """Remove anything credential-like from a server's message, and bound it."""
    if key is not None and key.reveal():
        text = text.replace(key.reveal(), "[redacted]")
    text = _TOKEN_RE.sub("[redacted]", text)
    text = " ".join(text.split())
    return text[:200] + ("…" if len(text) > 200 else "")


def _error_message(body: bytes) -> str:
    """The ``error.message`` of an OpenAI-style error body, or a bounded excerpt of the text."""
    text = body[:4096].decode("utf-8", "replace")
    try:
        doc = json.loads(text)
    except ValueError:
        return text
    if isinstance(doc, dict):
        err = doc.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            code = err.get("code")
            return f"{err['message']} ({code})" if isinstance(code, str) else str(err["message"])
        if isinstance(err, str):
            return err
    return text


class TokenEndpointError(RealtimeError):
    """The token endpoint answered an HTTP error other than 401/403.

    Attributes:
        status: the HTTP status (the reconnect classifier retries 5xx and 429).
    """

    def __init__(self, message: str, *, status: int) -> None:
        self.status = status
        super().__init__(message)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: following it could hand the key to another host."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        return None


def post(
    url: str, body: bytes, headers: dict[str, str], timeout_s: float, tls: ssl.SSLContext | None = None
) -> tuple[int, bytes]:
    """Blocking POST, no redirects; returns (status, body). HTTP errors are returned, not raised.

    ``tls`` verifies the server (and may carry a client certificate); None = the system's CAs.
    The body read is bounded (64 KiB and a byte).
    """
    handlers: list[urllib.request.BaseHandler] = [_NoRedirect()]
    if tls is not None:
        handlers.append(urllib.request.HTTPSHandler(context=tls))
    if urllib.parse.urlsplit(url).scheme == "http":
        handlers.append(urllib.request.ProxyHandler({}))  # loopback: never through a proxy
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, data=body, method="POST")
    for name, value in headers.items():
        # Unredirected: the header is never re-sent anywhere else.
        request.add_unredirected_header(name, value)
    try:
        with opener.open(request, timeout=timeout_s) as response:
            return int(response.status), response.read(_MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), exc.read(_MAX_RESPONSE_BYTES + 1)


def _parse_secret(data: bytes, source: str) -> Secret:
    if len(data) > _MAX_RESPONSE_BYTES:
        raise RealtimeError(f"token response from {source} is larger than {_MAX_RESPONSE_BYTES} bytes")
    try:
        doc = json.loads(data)
    except ValueError:
        raise RealtimeError(f"token response from {source} is not JSON") from None
    if isinstance(doc, dict) and isinstance(doc.get("client_secret"), dict):
        doc = doc["client_secret"]  # beta/fleet shape: {"client_secret": {"value", "expires_at"}}
    if not isinstance(doc, dict):
        raise RealtimeError(f"token response from {source} is not a JSON object")
    value = doc.get("value")
    if not isinstance(value, str) or _check_value(value.strip()) is not None:
        raise RealtimeError(f"token response from {source} has no usable 'value'")
    expires = doc.get("expires_at")
    expires_at = float(expires) if isinstance(expires, (int, float)) and not isinstance(expires, bool) else None
    return Secret(value.strip(), source=source, expires_at=expires_at)


def _without_nulls(value: Any) -> Any:
    """``value`` without null fields (a create request leaves a field out for its default).

    ``session.update`` may send an explicit null to clear a field; ``client_secrets`` takes none.
    """
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


async def mint_client_secret(
    token_url: str,
    key: Secret | None,
    session: Mapping[str, Any],
    ttl_s: int,
    timeout_s: float,
    tls: ssl.SSLContext | None = None,
) -> Secret:
    """Mint an ephemeral client secret (``ek_…``) for one connection (PROTOCOL.md §1.4).

    POSTs ``{"expires_after": {"anchor": "created_at", "seconds": ttl_s}, "session": session}``
    to ``token_url`` and parses ``{"value": …, "expires_at": …}`` (a ``{"client_secret": {…}}``
    wrapper is accepted too). Redirects are refused; plain ``http://`` only to loopback.

    Cancelling is safe: the worker thread finishes on its own socket timeout and its result is
    dropped.

    Args:
        token_url: OpenAI's ``https://api.openai.com/v1/realtime/client_secrets`` or a backend.
        key: sent as ``Authorization: Bearer``: the API key, a device token, or None (a backend
            that authenticates the device otherwise).
        session: the GA session object applied to sessions created with the secret.
        ttl_s: lifetime asked for the secret (10..7200 s).
        timeout_s: total deadline of the request.
        tls: the TLS context (a private CA, a client certificate); None = the system's CAs.

    Raises:
        AuthenticationError: the endpoint answered 401 or 403.
        TokenEndpointError: another HTTP error status (``.status``).
        RealtimeError: any other failure (network, timeout, malformed answer).
        ConfigError: ``token_url`` is not https (or http to loopback).
    """
    parts = urllib.parse.urlsplit(token_url)
    try:
        _ = parts.port
    except ValueError:
        raise ConfigError("realtime.auth.token_url: invalid port") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError("realtime.auth.token_url: must be an https:// URL")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigError("realtime.auth.token_url: plain http:// is allowed only to a loopback address")
    where = _redacted_url(token_url)
    body = json.dumps(
        {"expires_after": {"anchor": "created_at", "seconds": int(ttl_s)}, "session": _without_nulls(session)},
        separators=(",", ":"),
    ).encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if key is not None:
        headers.update(headers_for(key))
    logger.debug(
        "minting a client secret at %s (ttl %d s, credential %s)",
        where,
        ttl_s,
        fingerprint(key) if key is not None else "none",
    )
    try:
        async with asyncio.timeout(timeout_s):
            status, data = await asyncio.to_thread(post, token_url, body, headers, timeout_s, tls)
    except TimeoutError:
        raise RealtimeError(f"token request to {where} timed out after {timeout_s:g} s") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise RealtimeError(f"token request to {where} timed out after {timeout_s:g} s") from None
        raise RealtimeError(f"token request to {where} failed: {_scrub(str(reason), key)}") from None
    except OSError as exc:
        raise RealtimeError(f"token request to {where} failed: {exc.strerror or type(exc).__name__}") from None
    except http.client.HTTPException as exc:  # not HTTP at all (BadStatusLine, IncompleteRead…)
        raise RealtimeError(f"token request to {where} failed: bad HTTP answer ({type(exc).__name__})") from None
    if status in (401, 403):
        raise AuthenticationError(
            f"token endpoint {where} rejected the credential (HTTP {status}): {_scrub(_error_message(data), key)}"
        )
    if not 200 <= status < 300:
        raise TokenEndpointError(
            f"token endpoint {where} answered HTTP {status}: {_scrub(_error_message(data), key)}", status=status
        )
    secret = _parse_secret(data, where)
    logger.debug("client secret minted at %s (%s, expires_at %s)", where, fingerprint(secret), secret.expires_at)
    return secret


async def connection_secret(auth: AuthConfig, env: Mapping[str, str], session: Mapping[str, Any]) -> Secret:
    """The credential for one (re)connect: a freshly minted secret with a token URL, else the key.

    With ``auth.token_url`` set, a key is optional (a fleet backend may not need one); when one
    is found it authenticates the token request. The key is read again on every call so a
    replaced key file takes effect at the next connect.

    Raises:
        AuthenticationError: no key (without a token URL), or the token endpoint refused it.
        RealtimeError: the token request failed otherwise.
    """
    if auth.token_url is None:
        return resolve_key(auth, env)
    try:
        key: Secret | None = resolve_key(auth, env)
    except AuthenticationError:
        key = None  # a client certificate, or the network, authenticates the device
    tls = token_tls(auth) if urllib.parse.urlsplit(auth.token_url).scheme == "https" else None
    return await mint_client_secret(auth.token_url, key, session, auth.token_ttl_s, auth.token_timeout_s, tls)


def token_tls(auth: AuthConfig) -> ssl.SSLContext | None:
    """The TLS context for the token URL: ``auth.ca_file`` and the client certificate, if any.

    Raises:
        AuthenticationError: a configured certificate, key or CA file cannot be loaded.
    """
    if auth.ca_file is None and auth.client_cert_file is None:
        return None
    try:
        return client_tls(auth.ca_file, auth.client_cert_file, auth.client_key_file)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise AuthenticationError(f"realtime.auth: cannot load the token service's TLS files: {exc}") from None


def client_tls(ca_file: Path | None, cert_file: Path | None, key_file: Path | None) -> ssl.SSLContext:
    """A client's TLS context (the token service's, the MQTT broker's).

    The server is verified against ``ca_file`` (None: the system's CAs); ``cert_file`` is this
    client's certificate, its key in ``key_file`` or else in the same file.

    Raises:
        OSError, ssl.SSLError, ValueError: a file cannot be loaded.
    """
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if cert_file is not None:
        context.load_cert_chain(str(cert_file), str(key_file or cert_file))
    return context
