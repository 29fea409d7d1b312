"""``POST /v1/realtime/client_secrets`` as OpenAI answers it, so a fleet's token flow runs offline.

The request (``expires_after``, ``session``) and the answer (``value``, ``expires_at``,
``session``) are checked against the SDK's ``ClientSecretCreateParams`` and
``ClientSecretCreateResponse``; problems go to :attr:`ClientSecrets.violations`. A minted
``ek_…`` opens emulator sessions until it expires, and each session starts with the secret's
session (its model, instructions and tools), as the real service applies it.
"""

from __future__ import annotations

import functools
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

from earshot.emulator.wire import default_session, merge_session
from earshot.httpserve import HttpRequest, HttpResponse

__all__ = ["PATH", "ClientSecrets", "MintRecord"]

PATH = "/v1/realtime/client_secrets"
MAX_LIVE = 100_000
DEFAULT_TTL_S = 600


class MintRecord:
    """One secret minted: its value, expiry and session, and the request that asked for it."""

    def __init__(self, value: str, expires_at: int, session: dict[str, Any], body: dict[str, Any]) -> None:
        self.value = value
        self.expires_at = expires_at
        self.session = session
        self.body = body


class ClientSecrets:
    """The endpoint's state: the live secrets and what was asked."""

    def __init__(self, api_key: str | None, now_wall: Callable[[], float] = time.time) -> None:
        self.api_key = api_key
        self._now = now_wall
        self.minted: list[MintRecord] = []
        self.violations: list[str] = []
        self.bearers: list[str] = []
        """The bearer of every request (tests check that no device ever sent the real key)."""
        self._live: dict[str, MintRecord] = {}

    def lookup(self, value: str) -> MintRecord | None:
        """The live secret ``value``, or None (unknown or expired)."""
        record = self._live.get(value)
        if record is None or record.expires_at <= self._now():
            return None
        return record

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one HTTP request."""
        if request.target.split("?", 1)[0] != PATH:
            return HttpResponse.error(404, "not found")
        if request.method != "POST":
            return HttpResponse.error(405, "use POST")
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip()
        self.bearers.append(key)
        del self.bearers[:-1000]
        if scheme.lower() != "bearer" or not key:
            return HttpResponse.error(401, "Missing bearer authentication in header")
        if self.api_key is not None and key != self.api_key:
            return HttpResponse.error(401, "Incorrect API key provided")
        try:
            body = json.loads(request.body)
        except ValueError:
            return HttpResponse.error(400, "We could not parse the JSON body of your request.")
        problems = _check_params(body)
        if problems:
            self.violations.extend(problems)
            return HttpResponse.error(400, problems[0])
        now = self._now()
        seconds = body.get("expires_after", {}).get("seconds", DEFAULT_TTL_S)
        expires_at = int(now + seconds)
        asked = {k: v for k, v in body.get("session", {}).items() if k not in ("id", "object", "expires_at")}
        model = asked.get("model", "gpt-realtime")
        session = merge_session(default_session(model, int(now + 3600)), asked)
        value = "ek_emu_" + secrets.token_urlsafe(24)
        answer = {"value": value, "expires_at": expires_at, "session": session}
        problems = _check_response(answer)
        if problems:
            self.violations.extend(problems)
        record = MintRecord(value, expires_at, session, body)
        self._forget_expired(now)
        self._live[value] = record
        self.minted.append(record)
        del self.minted[:-1000]
        return HttpResponse.json(200, answer)

    def _forget_expired(self, now: float) -> None:
        if len(self._live) < MAX_LIVE:
            return
        for value in [v for v, r in self._live.items() if r.expires_at <= now]:
            del self._live[value]
        while len(self._live) >= MAX_LIVE:
            del self._live[next(iter(self._live))]


@functools.cache
def _validators() -> tuple[Callable[[Any], object], Callable[[Any], object]] | None:
    """The SDK's checks of ``ClientSecretCreateParams`` and ``ClientSecretCreateResponse``; None without the SDK.

    Built once: a pydantic adapter takes milliseconds to build.
    """
    try:
        from openai.types.realtime.client_secret_create_params import ClientSecretCreateParams
        from openai.types.realtime.client_secret_create_response import ClientSecretCreateResponse
        from pydantic import TypeAdapter
    except ImportError:  # pragma: no cover - the SDK is a development dependency
        return None
    return TypeAdapter(ClientSecretCreateParams).validate_python, ClientSecretCreateResponse.model_validate


def _sdk_problems(which: int, value: Any, what: str) -> list[str]:
    validators = _validators()
    if validators is None:  # pragma: no cover - the SDK is a development dependency
        return []
    from pydantic import ValidationError

    try:
        validators[which](value)
    except ValidationError as exc:
        return [f"client_secrets {what}: {e['loc']}: {e['msg']}" for e in exc.errors()[:5]]
    return []


def _check_params(body: Any) -> list[str]:
    if not isinstance(body, dict):
        return ["the body must be a JSON object"]
    expires = body.get("expires_after")
    if expires is not None:
        seconds = expires.get("seconds") if isinstance(expires, dict) else None
        if not isinstance(seconds, int) or isinstance(seconds, bool) or not 10 <= seconds <= 7200:
            return ["expires_after.seconds: must be an integer 10..7200"]
        if expires.get("anchor", "created_at") != "created_at":
            return ["expires_after.anchor: must be 'created_at'"]
    return _sdk_problems(0, body, "request")


def _check_response(answer: dict[str, Any]) -> list[str]:
    return _sdk_problems(1, answer, "response")
