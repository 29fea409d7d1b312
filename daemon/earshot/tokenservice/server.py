"""The token service: devices ask here for an ephemeral Realtime secret; the API key never leaves.

``POST /v1/realtime/client_secrets`` (the same path and body as OpenAI's, so a device only changes
``realtime.auth.token_url``):

1. the device is authenticated (:meth:`Registry.authenticate`: its token or client certificate);
   unknown is 401, revoked is 403. The devices file is re-read whenever it changes, so a revoked
   device is refused from its next request on;
2. the request is pinned (:func:`pin_request`) and counted (:class:`Limiter`); over the rate or the
   daily cap is 429 with ``Retry-After``;
3. the service mints the secret upstream with the real key (re-read per request, so a rotated
   key takes effect at once) and hands the upstream's answer back. An upstream failure is 502
   (503 with ``Retry-After`` when the upstream is rate-limiting) and is not counted.

``GET /healthz`` answers 200 (for a load balancer); ``GET /metrics`` gives the request counts by
outcome in the Prometheus text format. Every request is logged as one line with the device id
and the outcome; no token, key or secret is ever logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import os
import ssl
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from earshot.config import AuthConfig
from earshot.errors import AuthenticationError
from earshot.httpserve import HttpRequest, HttpResponse, HttpServer
from earshot.realtime.auth import headers_for, post, resolve_key
from earshot.tokenservice.config import TokenServiceConfig
from earshot.tokenservice.policy import Limiter, Pin, pin_request
from earshot.tokenservice.registry import Registry, RegistryError, parse_registry
from earshot.usage import atomic_write

__all__ = ["PATH", "TokenService"]

logger = logging.getLogger(__name__)

PATH = "/v1/realtime/client_secrets"
SAVE_EVERY_S = 30.0
OUTCOMES = ("minted", "unauthenticated", "revoked", "bad_request", "rate_limited", "upstream_error")


class TokenService:
    """One service: its registry, limiter, upstream and HTTP server."""

    def __init__(self, cfg: TokenServiceConfig, env: Mapping[str, str] | None = None) -> None:
        self.cfg = cfg
        self.env = dict(os.environ if env is None else env)
        self.limiter = Limiter(cfg.limits.per_minute, cfg.limits.burst, cfg.limits.daily)
        self.pin = Pin(cfg.session.model, cfg.session.instructions, cfg.session.tools, cfg.limits.ttl_s)
        self.outcomes: Counter[str] = Counter()
        self._registry = Registry()
        self._registry_stamp: tuple[int, int, int] | None = None
        self._registry_broken: str | None = None
        self._upstream_slots = asyncio.Semaphore(cfg.upstream.max_in_flight)
        self._saved_counts: dict[str, Any] | None = None
        self._server = HttpServer(
            self.handle,
            host=cfg.listen.host,
            port=cfg.listen.port,
            ssl=self._tls(),
            max_connections=cfg.listen.max_connections,
            name="token-service",
        )
        self._saver: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """The service's base URL (after :meth:`start`)."""
        return self._server.url

    def _tls(self) -> ssl.SSLContext | None:
        listen = self.cfg.listen
        if listen.cert_file is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(listen.cert_file), str(listen.key_file))
        if listen.client_ca_file is not None:
            context.load_verify_locations(cafile=str(listen.client_ca_file))
            context.verify_mode = ssl.CERT_OPTIONAL  # a token may still authenticate a device
        return context

    async def start(self) -> None:
        """Check the key and the registry, restore today's counts, listen."""
        resolve_key(AuthConfig(key_file=self.cfg.upstream.key_file), self.env)  # fail now, not per device
        self.registry()
        if self._registry_broken is not None:
            raise RegistryError(f"{self.cfg.devices_file}: {self._registry_broken}")
        if self.cfg.state_file is not None:
            with contextlib.suppress(OSError, ValueError):
                self.limiter.restore(json.loads(self.cfg.state_file.read_bytes()), time.time())
        await self._server.start()
        self._saver = asyncio.create_task(self._save_loop(), name="token-service-state")

    async def aclose(self) -> None:
        """Stop serving and save today's counts."""
        await self._server.aclose()
        if self._saver is not None:
            self._saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._saver
        await self._save()

    async def __aenter__(self) -> TokenService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def registry(self) -> Registry:
        """The devices file as it is now (re-read when its inode, size or mtime changed).

        A file that became unreadable or invalid refuses every device until it is mended: a
        mistake in the file must not let a revoked device back in.
        """
        path = self.cfg.devices_file
        try:
            st = path.stat()
        except FileNotFoundError:
            stamp: tuple[int, int, int] | None = None
        except OSError as exc:
            self._broken(f"cannot read: {exc.strerror}")
            return Registry()
        else:
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._registry_stamp and self._registry_stamp is not None:
            return self._registry if self._registry_broken is None else Registry()
        self._registry_stamp = stamp
        try:
            registry = parse_registry(path.read_bytes()) if stamp is not None else Registry()
        except FileNotFoundError:
            registry = Registry()
        except (OSError, RegistryError) as exc:
            self._broken(str(exc) if isinstance(exc, RegistryError) else f"cannot read: {exc.strerror}")
            return Registry()
        if self._registry_broken is not None:
            logger.info("devices file %s is valid again", path)
        self._registry_broken = None
        self._registry = registry
        self.limiter.forget(registry.devices)
        logger.info("devices file %s: %d devices enrolled", path, len(registry.devices))
        return registry

    def _broken(self, why: str) -> None:
        if self._registry_broken != why:
            logger.error("devices file %s: %s; every device is refused until it is mended", self.cfg.devices_file, why)
        self._registry_broken = why

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one request."""
        path = request.target.split("?", 1)[0]
        if path == "/healthz" and request.method in ("GET", "HEAD"):
            return HttpResponse.json(200, {"status": "ok"})
        if path == "/metrics" and request.method == "GET":
            return HttpResponse(200, self.metrics().encode(), content_type="text/plain; version=0.0.4")
        if path != PATH:
            return HttpResponse.error(404, "not found")
        if request.method != "POST":
            return HttpResponse.error(405, "use POST", ("Allow", "POST"))
        response, device, outcome = await self._mint(request)
        self.outcomes[outcome] += 1
        logger.info("%s %s: %s (%d)", request.peer, device or "-", outcome, response.status)
        return response

    async def _mint(self, request: HttpRequest) -> tuple[HttpResponse, str | None, str]:
        scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
        token = bearer.strip() if scheme.lower() == "bearer" else None
        device, why = self.registry().authenticate(token, request.cert_cn)
        if device is None:
            revoked = why.endswith("revoked")
            return HttpResponse.error(403 if revoked else 401, why), None, "revoked" if revoked else "unauthenticated"
        try:
            body = json.loads(request.body)
        except (ValueError, RecursionError):
            return HttpResponse.error(400, "the body is not JSON"), device.id, "bad_request"
        upstream_body, why = pin_request(body, self.pin)
        if upstream_body is None:
            return HttpResponse.error(400, why), device.id, "bad_request"
        wait = self.limiter.take(device.id, time.monotonic(), time.time())
        if wait is not None:
            message = f"device {device.id!r} is over its limit; retry in {wait:g} s"
            return HttpResponse.error(429, message, ("Retry-After", f"{wait:g}")), device.id, "rate_limited"
        async with self._upstream_slots:
            response = await self._upstream(upstream_body)
        if response.status != 200:
            self.limiter.refund(device.id)
            return response, device.id, "upstream_error"
        return response, device.id, "minted"

    async def _upstream(self, body: dict[str, Any]) -> HttpResponse:
        try:
            key = resolve_key(AuthConfig(key_file=self.cfg.upstream.key_file), self.env)
        except AuthenticationError:
            logger.error("no usable API key: cannot mint for anyone")
            return HttpResponse.error(502, "the service has no API key")
        headers = {"Content-Type": "application/json", "Accept": "application/json", **headers_for(key)}
        data = json.dumps(body, separators=(",", ":")).encode()
        timeout = self.cfg.upstream.timeout_s
        try:
            async with asyncio.timeout(timeout + 1.0):
                status, answer = await asyncio.to_thread(post, self.cfg.upstream.url, data, headers, timeout)
        except (TimeoutError, OSError, http.client.HTTPException, ValueError) as exc:  # no answer, or not HTTP
            logger.warning("upstream %s: %s", self.cfg.upstream.url, type(exc).__name__)
            return HttpResponse.error(502, "the upstream did not answer")
        if status == 200:
            try:
                doc = json.loads(answer)
            except ValueError:
                doc = None
            if isinstance(doc, dict) and isinstance(doc.get("value"), str):
                return HttpResponse(200, answer)
            logger.warning("upstream answered 200 without a secret")
            return HttpResponse.error(502, "the upstream answered without a secret")
        logger.warning("upstream answered %d", status)
        if status == 429 or status >= 500:
            return HttpResponse.error(503, f"the upstream answered {status}", ("Retry-After", "5"))
        return HttpResponse.error(502, f"the upstream refused the request ({status})")

    def metrics(self) -> str:
        """The request counts by outcome (Prometheus text format)."""
        lines = [
            "# HELP earshot_token_requests_total Secret requests answered, by outcome.",
            "# TYPE earshot_token_requests_total counter",
            *(f'earshot_token_requests_total{{outcome="{o}"}} {self.outcomes[o]}' for o in OUTCOMES),
            "# HELP earshot_token_devices Devices enrolled (revoked ones included).",
            "# TYPE earshot_token_devices gauge",
            f"earshot_token_devices {len(self._registry.devices)}",
        ]
        return "\n".join(lines) + "\n"

    async def _save_loop(self) -> None:
        while True:
            await asyncio.sleep(SAVE_EVERY_S)
            await self._save()

    async def _save(self) -> None:
        """Write today's counts if they changed (taken on the loop, written from a thread)."""
        snapshot = self.limiter.snapshot()
        if self.cfg.state_file is None or snapshot == self._saved_counts:
            return
        try:
            await asyncio.to_thread(atomic_write, self.cfg.state_file, json.dumps(snapshot), mode=0o600)
        except OSError as exc:
            logger.warning("cannot save today's counts to %s: %s", self.cfg.state_file, exc.strerror)
            return
        self._saved_counts = snapshot


def write_registry(path: Path, registry: Registry) -> None:
    """Replace the devices file atomically (mode 0600: it lists every device).

    The file is given to the owner of its directory, so that the service (its own user, under
    systemd's ``DynamicUser=``) can read what root enrolled.
    """
    atomic_write(path, registry.to_json(), mode=0o600)
    owner = path.parent.stat()
    if os.geteuid() == 0 and (owner.st_uid, owner.st_gid) != (0, 0):
        os.chown(path, owner.st_uid, owner.st_gid)
