"""The token service's pure parts: who a device is, what it may take, which session it gets."""

from __future__ import annotations

import json

import pytest

from earshot.tokenservice.policy import DAY_S, Limiter, Pin, pin_request
from earshot.tokenservice.registry import Device, Registry, RegistryError, hash_token, new_token, parse_registry

DAY0 = 20_000 * DAY_S  # a UTC midnight


def registry_bytes(devices: dict[str, object]) -> bytes:
    return json.dumps({"version": 1, "devices": devices}).encode()


def test_a_device_is_known_by_its_token_and_the_file_keeps_only_its_hash() -> None:
    token = new_token()
    registry = Registry.of([Device("kitchen-1", token_sha256=hash_token(token))])
    device, why = registry.authenticate(token, None)
    assert device is not None
    assert device.id == "kitchen-1"
    assert why == ""
    assert token not in registry.to_json()
    assert hash_token(token) in registry.to_json()
    assert parse_registry(registry.to_json().encode()) == registry


def test_unknown_tokens_and_missing_credentials_are_refused_without_quoting_them() -> None:
    registry = Registry.of([Device("a", token_sha256=hash_token("edt_a"))])
    device, why = registry.authenticate("edt_guess", None)
    assert device is None
    assert "edt_guess" not in why
    assert "unknown" in why
    device, why = registry.authenticate(None, None)
    assert device is None
    assert "no credentials" in why


def test_a_certificate_names_its_device_only_if_the_device_may_use_one() -> None:
    registry = Registry.of([Device("hall", certificate=True), Device("attic", token_sha256=hash_token("edt_x"))])
    assert registry.authenticate(None, "hall")[0] == registry.devices["hall"]
    assert registry.authenticate(None, "attic")[0] is None
    assert registry.authenticate(None, "nobody")[0] is None
    # A token, when sent, decides: a certificate does not rescue a wrong token.
    assert registry.authenticate("edt_wrong", "hall")[0] is None


def test_a_revoked_device_is_refused_and_its_token_forgotten() -> None:
    registry = Registry.of([Device("a", token_sha256=hash_token("edt_a"), certificate=True)])
    revoked = registry.revoked("a")
    device, _why = revoked.authenticate("edt_a", None)
    assert device is None
    assert revoked.authenticate(None, "a") == (None, "device 'a' is revoked")
    assert revoked.devices["a"].token_sha256 is None
    with pytest.raises(KeyError):
        registry.revoked("nobody")


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"{", "not JSON"),
        (b"[]", "version"),
        (registry_bytes({"bad id!": {}}), "devices.bad id!"),
        (registry_bytes({"a": []}), "devices.a: must be an object"),
        (registry_bytes({"a": {"token_sha256": "abc"}}), "devices.a.token_sha256"),
        (registry_bytes({"a": {"token_sha256": "0" * 64}, "b": {"token_sha256": "0" * 64}}), "same token"),
        (registry_bytes({"a": {"revoked": "yes"}}), "devices.a.revoked"),
        (registry_bytes({"a": {"certificate": 1}}), "devices.a.certificate"),
        (registry_bytes({"a": {"labels": {"Room": "x"}}}), "devices.a.labels.Room"),
        (registry_bytes({"a": {"labels": {"room": 3}}}), "devices.a.labels.room"),
    ],
)
def test_a_broken_devices_file_names_the_device_and_key(data: bytes, needle: str) -> None:
    with pytest.raises(RegistryError, match=None) as info:
        parse_registry(data)
    assert needle in str(info.value)


def test_an_empty_devices_file_has_no_devices() -> None:
    assert parse_registry(b"").devices == {}
    assert parse_registry(b"  \n").devices == {}


def test_the_rate_allows_a_burst_then_one_per_interval_and_says_how_long_to_wait() -> None:
    limiter = Limiter(per_minute=6.0, burst=3, daily=100)
    now = 1000.0
    assert [limiter.take("a", now, DAY0) for _ in range(3)] == [None, None, None]
    wait = limiter.take("a", now, DAY0)
    assert wait == 10  # 6 a minute: one every 10 s
    assert limiter.take("b", now, DAY0) is None  # another device has its own bucket
    assert limiter.take("a", now + 9.0, DAY0) is not None
    assert limiter.take("a", now + 10.5, DAY0) is None
    assert limiter.today("a", DAY0) == 4


def test_the_daily_cap_holds_until_the_utc_day_ends() -> None:
    limiter = Limiter(per_minute=6000.0, burst=1000, daily=2)
    assert limiter.take("a", 0.0, DAY0 + 100) is None
    assert limiter.take("a", 0.0, DAY0 + 100) is None
    assert limiter.take("a", 0.0, DAY0 + 100) == DAY_S - 100
    assert limiter.take("a", 1.0, DAY0 + DAY_S) is None  # the next day


def test_a_failed_upstream_mint_is_given_back() -> None:
    limiter = Limiter(per_minute=1.0, burst=1, daily=1)
    assert limiter.take("a", 0.0, DAY0) is None
    limiter.refund("a")
    assert limiter.take("a", 0.0, DAY0) is None


def test_todays_counts_survive_a_restart_but_not_a_new_day() -> None:
    limiter = Limiter(per_minute=6000.0, burst=1000, daily=3)
    for _ in range(3):
        assert limiter.take("a", 0.0, DAY0 + 5) is None
    saved = json.loads(json.dumps(limiter.snapshot()))
    again = Limiter(per_minute=6000.0, burst=1000, daily=3)
    again.restore(saved, DAY0 + 50)
    assert again.take("a", 0.0, DAY0 + 50) is not None
    tomorrow = Limiter(per_minute=6000.0, burst=1000, daily=3)
    tomorrow.restore(saved, DAY0 + DAY_S + 1)
    assert tomorrow.take("a", 0.0, DAY0 + DAY_S + 1) is None
    for junk in (None, [], {"day": "x"}, {"day": DAY0 // DAY_S, "counts": {"a": "many", "b": -1, "c": True}}):
        fresh = Limiter(per_minute=6000.0, burst=1000, daily=3)
        fresh.restore(junk, DAY0 + 5)
        assert fresh.snapshot()["counts"] == {}


def test_the_session_is_pinned_model_instructions_and_tools() -> None:
    body = {
        "expires_after": {"anchor": "created_at", "seconds": 3600},
        "session": {
            "type": "realtime",
            "model": "gpt-realtime",
            "instructions": "Obey me.",
            "audio": {"output": {"voice": "marin"}},
            "tools": [
                {"type": "function", "name": "set_timer"},
                {"type": "function", "name": "open_garage"},
                {"type": "mcp", "server_label": "home", "server_url": "https://x"},
                "junk",
            ],
            "tool_choice": "auto",
        },
    }
    out, why = pin_request(body, Pin("gpt-realtime-mini", "Be brief.", ("set_timer", "home"), 120))
    assert out is not None, why
    session = out["session"]
    assert session["model"] == "gpt-realtime-mini"
    assert session["instructions"] == "Be brief."
    assert [t.get("name") or t.get("server_label") for t in session["tools"]] == ["set_timer", "home"]
    assert session["audio"] == {"output": {"voice": "marin"}}  # the device's own
    assert out["expires_after"] == {"anchor": "created_at", "seconds": 120}
    # No tool allowed: none offered, and no tool_choice naming one.
    out, _ = pin_request(body, Pin("m", None, (), 120))
    assert out is not None
    assert out["session"]["tools"] == []
    assert "tool_choice" not in out["session"]
    assert out["session"]["instructions"] == "Obey me."
    # null = whatever the device offers.
    out, _ = pin_request(body, Pin("m", None, None, 120))
    assert out is not None
    assert len(out["session"]["tools"]) == 4


@pytest.mark.parametrize(
    "body",
    [[], {"session": []}, {"session": {"type": "transcription"}}, "x"],
)
def test_requests_that_are_not_a_realtime_session_are_refused(body: object) -> None:
    out, why = pin_request(body, Pin("m"))
    assert out is None
    assert why
