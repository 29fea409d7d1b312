"""realtime/auth.py: key sources and precedence, secrecy, client-secret minting over real loopback HTTP."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from earshot.config import AuthConfig
from earshot.errors import AuthenticationError, ConfigError, RealtimeError
from earshot.realtime.auth import (
    CREDENTIAL_NAME,
    Secret,
    TokenEndpointError,
    connection_secret,
    credential_mtime,
    fingerprint,
    headers_for,
    mint_client_secret,
    resolve_key,
)

KEY_CRED = "sk-proj-CREDDIRcreddirCREDDIR0123456789abcdefABCDEF"
KEY_ENV = "sk-proj-ENVIRONenvironENVIRON0123456789abcdefABCDEF"
KEY_FILE = "sk-proj-KEYFILEkeyfileKEYFILE0123456789abcdefABCDEF"
ALL_KEYS = (KEY_CRED, KEY_ENV, KEY_FILE)
SESSION = {"type": "realtime", "model": "gpt-realtime-2.1", "instructions": "be brief"}


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def sources(tmp_path: Path) -> tuple[AuthConfig, dict[str, str]]:
    """All three sources present, each with a different key and surrounding whitespace."""
    cred = tmp_path / "creds"
    cred.mkdir()
    _write(cred / CREDENTIAL_NAME, f"  {KEY_CRED}\n")
    key_file = _write(tmp_path / "key", f"\n{KEY_FILE}\r\n")
    env = {"CREDENTIALS_DIRECTORY": str(cred), "OPENAI_API_KEY": f" {KEY_ENV} "}
    return AuthConfig(key_file=key_file), env


# ---------------------------------------------------------------------------- sources and order


def test_credentials_directory_wins(sources: tuple[AuthConfig, dict[str, str]]) -> None:
    auth, env = sources
    secret = resolve_key(auth, env)
    assert secret.reveal() == KEY_CRED
    assert secret.source.endswith(CREDENTIAL_NAME)


def test_environment_is_second(sources: tuple[AuthConfig, dict[str, str]]) -> None:
    auth, env = sources
    del env["CREDENTIALS_DIRECTORY"]
    secret = resolve_key(auth, env)
    assert secret.reveal() == KEY_ENV
    assert secret.source == "$OPENAI_API_KEY"


def test_key_file_is_last(sources: tuple[AuthConfig, dict[str, str]]) -> None:
    auth, env = sources
    del env["CREDENTIALS_DIRECTORY"], env["OPENAI_API_KEY"]
    assert resolve_key(auth, env).reveal() == KEY_FILE


def test_credentials_directory_without_the_file_falls_through(
    sources: tuple[AuthConfig, dict[str, str]], tmp_path: Path
) -> None:
    auth, env = sources
    empty = tmp_path / "other-creds"
    empty.mkdir()
    env["CREDENTIALS_DIRECTORY"] = str(empty)
    assert resolve_key(auth, env).reveal() == KEY_ENV


def test_unusable_sources_are_skipped_with_a_reason(
    sources: tuple[AuthConfig, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    auth, env = sources
    _write(Path(env["CREDENTIALS_DIRECTORY"]) / CREDENTIAL_NAME, "  \n")
    env["OPENAI_API_KEY"] = f"OPENAI_API_KEY={KEY_ENV}"
    with caplog.at_level(logging.DEBUG):
        assert resolve_key(auth, env).reveal() == KEY_FILE
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("is empty" in w for w in warnings)
    assert any("NAME=value" in w for w in warnings)
    assert KEY_ENV not in caplog.text


def test_missing_everywhere_says_where_it_looked(tmp_path: Path) -> None:
    cred = tmp_path / "creds"
    cred.mkdir()
    auth = AuthConfig(key_file=tmp_path / "nope")
    with pytest.raises(AuthenticationError) as info:
        resolve_key(auth, {"CREDENTIALS_DIRECTORY": str(cred)})
    text = str(info.value)
    assert str(cred / CREDENTIAL_NAME) in text
    assert "$OPENAI_API_KEY: not set" in text
    assert str(tmp_path / "nope") in text
    assert "no such file" in text


def test_unreadable_and_directory_key_files(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root reads a mode-000 file: use a directory for the "cannot be read" case instead
        auth = AuthConfig(key_file=tmp_path)
        with pytest.raises(AuthenticationError, match="is a directory"):
            resolve_key(auth, {})
        return
    path = _write(tmp_path / "key", KEY_FILE)
    path.chmod(0)
    with pytest.raises(AuthenticationError, match="cannot be read") as info:
        resolve_key(AuthConfig(key_file=path), {})
    assert KEY_FILE not in str(info.value)


def test_a_key_with_inner_whitespace_is_rejected_without_quoting_it(tmp_path: Path) -> None:
    two = f"{KEY_FILE}\n{KEY_ENV}"
    with pytest.raises(AuthenticationError, match="whitespace") as info:
        resolve_key(AuthConfig(key_file=_write(tmp_path / "key", two)), {})
    assert KEY_FILE not in str(info.value)
    assert KEY_ENV not in str(info.value)


def test_credential_mtime_tracks_the_key_files(sources: tuple[AuthConfig, dict[str, str]]) -> None:
    auth, env = sources
    assert auth.key_file is not None
    cred_file = Path(env["CREDENTIALS_DIRECTORY"]) / CREDENTIAL_NAME
    os.utime(cred_file, (1000.0, 1000.0))
    os.utime(auth.key_file, (2000.0, 2000.0))
    assert credential_mtime(auth, env) == 2000.0
    os.utime(cred_file, (3000.0, 3000.0))
    assert credential_mtime(auth, env) == 3000.0
    cred_file.unlink()
    auth.key_file.unlink()
    assert credential_mtime(auth, env) is None


# ----------------------------------------------------------------------------------------- secrecy


def test_secret_text_forms_never_show_the_value() -> None:
    secret = Secret(KEY_ENV, source="OPENAI_API_KEY")
    assert repr(secret) == f"<secret from OPENAI_API_KEY, {len(KEY_ENV)} chars>"
    for text in (
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        f"{secret:>80}",
        repr([secret]),
        str({"k": secret}),
    ):
        assert KEY_ENV not in text
    assert secret.reveal() == KEY_ENV
    assert secret == Secret(KEY_ENV, source="elsewhere")
    assert secret != Secret(KEY_FILE, source="OPENAI_API_KEY")


def test_fingerprint_is_stable_and_hides_the_value() -> None:
    a = fingerprint(Secret(KEY_ENV, source="x"))
    assert a == fingerprint(Secret(KEY_ENV, source="y"))
    assert a != fingerprint(Secret(KEY_FILE, source="x"))
    assert a.startswith("sha256:")
    assert not any(KEY_ENV[i : i + 4] in a for i in range(len(KEY_ENV) - 3))


def test_headers_are_bearer_only() -> None:
    assert headers_for(Secret(KEY_ENV, source="x")) == {"Authorization": f"Bearer {KEY_ENV}"}


def test_secrets_cannot_be_pickled() -> None:
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(Secret(KEY_ENV, source="x"))


# ------------------------------------------------------------------------------- loopback server


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    stall: bool = False


@dataclass
class TokenServer:
    url: str
    replies: list[Reply] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def token_server() -> Iterator[TokenServer]:
    """A real HTTP server on 127.0.0.1 that records requests and answers from a script."""
    state: TokenServer | None = None

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            assert state is not None
            length = int(self.headers.get("Content-Length", "0"))
            state.requests.append(
                {"path": self.path, "headers": dict(self.headers.items()), "body": self.rfile.read(length)}
            )
            reply = state.replies.pop(0) if state.replies else Reply(500, b"no scripted reply")
            if reply.stall:
                state.release.wait(30)
                return
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state = TokenServer(url=f"http://127.0.0.1:{server.server_address[1]}/v1/realtime/client_secrets")
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def _ok(value: str = "ek_68a1b2c3d4e5f6abcdef0123456789", expires_at: int = 1_900_000_000) -> Reply:
    return Reply(200, json.dumps({"value": value, "expires_at": expires_at, "session": {"id": "sess_1"}}).encode())


async def test_mint_posts_the_ga_body_and_parses_the_secret(token_server: TokenServer) -> None:
    token_server.replies.append(_ok())
    key = Secret(KEY_ENV, source="$OPENAI_API_KEY")
    secret = await mint_client_secret(token_server.url, key, SESSION, 300, 5.0)
    assert secret.reveal() == "ek_68a1b2c3d4e5f6abcdef0123456789"
    assert secret.expires_at == 1_900_000_000
    assert "ek_68a1" not in repr(secret)
    (request,) = token_server.requests
    assert request["path"] == "/v1/realtime/client_secrets"
    assert json.loads(request["body"]) == {
        "expires_after": {"anchor": "created_at", "seconds": 300},
        "session": SESSION,
    }
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers["authorization"] == f"Bearer {KEY_ENV}"
    assert headers["content-type"] == "application/json"
    assert "openai-beta" not in headers


async def test_mint_without_a_key_sends_no_authorization(token_server: TokenServer) -> None:
    token_server.replies.append(
        Reply(200, json.dumps({"client_secret": {"value": "ek_fleet123456", "expires_at": 5}}).encode())
    )
    secret = await mint_client_secret(token_server.url, None, SESSION, 60, 5.0)
    assert secret.reveal() == "ek_fleet123456"
    assert "authorization" not in {k.lower() for k in token_server.requests[0]["headers"]}


async def test_mint_401_is_an_authentication_error_without_the_key(token_server: TokenServer) -> None:
    masked = f"{KEY_ENV[:6]}***{KEY_ENV[-4:]}"
    body = {"error": {"message": f"Incorrect API key provided: {masked} and {KEY_ENV}", "code": "invalid_api_key"}}
    token_server.replies.append(Reply(401, json.dumps(body).encode()))
    with pytest.raises(AuthenticationError) as info:
        await mint_client_secret(token_server.url, Secret(KEY_ENV, source="env"), SESSION, 60, 5.0)
    text = str(info.value)
    assert "HTTP 401" in text
    assert "invalid_api_key" in text
    assert KEY_ENV not in text
    assert masked not in text


async def test_mint_403_is_an_authentication_error(token_server: TokenServer) -> None:
    token_server.replies.append(Reply(403, b"forbidden"))
    with pytest.raises(AuthenticationError, match="HTTP 403"):
        await mint_client_secret(token_server.url, None, SESSION, 60, 5.0)


async def test_mint_500_is_a_realtime_error_with_status(token_server: TokenServer) -> None:
    token_server.replies.append(Reply(500, b'{"error": {"message": "upstream exploded"}}'))
    with pytest.raises(TokenEndpointError) as info:
        await mint_client_secret(token_server.url, None, SESSION, 60, 5.0)
    assert info.value.status == 500
    assert "upstream exploded" in str(info.value)
    assert not isinstance(info.value, AuthenticationError)


async def test_mint_timeout(token_server: TokenServer) -> None:
    token_server.replies.append(Reply(stall=True))
    with pytest.raises(RealtimeError, match="timed out"):
        await mint_client_secret(token_server.url, None, SESSION, 60, 1.0)


@pytest.mark.parametrize(
    "body",
    [b"<html>gateway</html>", b"[1, 2]", b'{"expires_at": 1}', b'{"value": ""}', b'{"value": "two words"}'],
)
async def test_mint_garbage_answers(token_server: TokenServer, body: bytes) -> None:
    token_server.replies.append(Reply(200, body))
    with pytest.raises(RealtimeError) as info:
        await mint_client_secret(token_server.url, None, SESSION, 60, 5.0)
    assert not isinstance(info.value, AuthenticationError)
    assert "token response" in str(info.value)


async def test_mint_refused_connection() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RealtimeError, match="failed"):
        await mint_client_secret(f"http://127.0.0.1:{port}/t", None, SESSION, 60, 5.0)


async def test_mint_redirect_is_not_followed(token_server: TokenServer) -> None:
    token_server.replies.append(Reply(307, b""))
    with pytest.raises(TokenEndpointError) as info:
        await mint_client_secret(token_server.url, Secret(KEY_ENV, source="env"), SESSION, 60, 5.0)
    assert info.value.status == 307
    assert len(token_server.requests) == 1


async def test_mint_against_something_that_is_not_http() -> None:
    import asyncio

    async def babble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(babble, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(RealtimeError, match="bad HTTP answer"):
            await mint_client_secret(f"http://127.0.0.1:{port}/t", None, SESSION, 60, 5.0)


@pytest.mark.parametrize("url", ["http://example.com/t", "ftp://127.0.0.1/t", "not a url", "http://127.0.0.1:x/t"])
async def test_mint_refuses_clear_text_off_loopback(url: str) -> None:
    with pytest.raises(ConfigError):
        await mint_client_secret(url, Secret(KEY_ENV, source="env"), SESSION, 60, 5.0)


async def test_connection_secret_uses_the_key_directly_without_a_token_url(
    sources: tuple[AuthConfig, dict[str, str]],
) -> None:
    auth, env = sources
    assert (await connection_secret(auth, env, SESSION)).reveal() == KEY_CRED


async def test_connection_secret_mints_with_a_token_url_and_no_key(token_server: TokenServer) -> None:
    token_server.replies.append(_ok("ek_nokey_on_device"))
    auth = AuthConfig(token_url=token_server.url, token_ttl_s=90)
    secret = await connection_secret(auth, {}, SESSION)
    assert secret.reveal() == "ek_nokey_on_device"
    assert json.loads(token_server.requests[0]["body"])["expires_after"]["seconds"] == 90


async def test_the_key_never_reaches_logs_or_errors_across_the_flow(
    sources: tuple[AuthConfig, dict[str, str]], token_server: TokenServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Resolve, mint (success, 401, 500, garbage, timeout) at DEBUG: no record or error text holds a key."""
    auth, env = sources
    auth = AuthConfig(key_file=auth.key_file, token_url=token_server.url, token_timeout_s=1.0)
    echo = json.dumps({"error": {"message": f"bad key {KEY_CRED}"}}).encode()
    token_server.replies += [_ok(), Reply(401, echo), Reply(500, echo), Reply(200, echo), Reply(stall=True)]
    texts: list[str] = []
    with caplog.at_level(logging.DEBUG):
        resolved = resolve_key(auth, env)
        texts += [repr(resolved), str(resolved), fingerprint(resolved)]
        minted = await connection_secret(auth, env, SESSION)
        texts += [repr(minted), str(minted)]
        for _ in range(4):
            with pytest.raises(RealtimeError) as info:
                await connection_secret(auth, env, SESSION)
            texts.append(str(info.value))
            texts.append(repr(info.value))
        for name in ("CREDENTIALS_DIRECTORY", "OPENAI_API_KEY"):
            del env[name]
        assert auth.key_file is not None
        auth.key_file.unlink()
        with pytest.raises(AuthenticationError) as missing:
            resolve_key(auth, env)
        texts.append(str(missing.value))
    assert caplog.records, "the flow logs at DEBUG"
    logged = [r.getMessage() for r in caplog.records] + [str(r.args) for r in caplog.records]
    for key in (*ALL_KEYS, minted.reveal()):
        for text in texts + logged + [caplog.text]:
            assert key not in text


async def test_the_mint_request_leaves_null_fields_out(token_server: TokenServer) -> None:
    """client_secrets takes no explicit nulls (the SDK's ClientSecretCreateParams); session.update may."""
    token_server.replies.append(_ok("ek_nulls"))
    session = {**SESSION, "audio": {"input": {"transcription": None, "format": {"type": "audio/pcm", "rate": 24000}}}}
    await mint_client_secret(token_server.url, None, session, 60, 5.0)
    sent = json.loads(token_server.requests[0]["body"])["session"]
    assert sent["audio"]["input"] == {"format": {"type": "audio/pcm", "rate": 24000}}
    assert "null" not in token_server.requests[0]["body"].decode()


def test_unloadable_token_service_certificates_are_an_authentication_error(tmp_path: Path) -> None:
    from earshot.realtime.auth import token_tls

    assert token_tls(AuthConfig(token_url="https://x")) is None
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    with pytest.raises(AuthenticationError, match=r"realtime\.auth: cannot load the token service's TLS files"):
        token_tls(AuthConfig(token_url="https://x", client_cert_file=tmp_path / "cert.pem"))
    with pytest.raises(AuthenticationError):
        token_tls(AuthConfig(token_url="https://x", ca_file=tmp_path / "missing.pem"))
