"""What the Realtime API bills (issue 19): usage and rate limits parsed defensively, the session's
controls (reasoning, truncation, prompt, tool choice) sent as the SDK types say."""

from __future__ import annotations

from typing import Any

import pytest

from earshot.config import PricesConfig, parse_config
from earshot.emulator.schema import validate_client_event
from earshot.errors import ConfigError
from earshot.realtime.sessionconfig import build_session_config, mcp_tool
from earshot.realtime.toolspec import ToolSpec
from earshot.tokens import TokenLedger, TokenUsage, parse_rate_limits, parse_usage

USAGE = {
    "total_tokens": 1000,
    "input_tokens": 600,
    "output_tokens": 400,
    "input_token_details": {"text_tokens": 100, "audio_tokens": 500, "cached_tokens": 80},
    "output_token_details": {"text_tokens": 30, "audio_tokens": 370},
}


def test_usage_is_read_as_billed() -> None:
    assert parse_usage(USAGE) == TokenUsage(text_in=100, audio_in=500, cached_in=80, text_out=30, audio_out=370)
    assert parse_usage(None) is None


@pytest.mark.parametrize(
    "hostile",
    [
        {"input_token_details": {"text_tokens": -5, "audio_tokens": 10**12, "cached_tokens": True}},
        {"input_token_details": "lots", "output_token_details": [1, 2]},
        {"output_token_details": {"audio_tokens": 1.5e3}},
    ],
)
def test_hostile_usage_counts_nothing(hostile: dict[str, Any]) -> None:
    assert parse_usage(hostile) == TokenUsage()


def test_the_ledger_adds_up_and_prices() -> None:
    ledger = TokenLedger()
    ledger.add(TokenUsage(text_in=1_000_000, audio_out=1_000_000))
    ledger.engagement_started()
    ledger.add(TokenUsage(audio_in=1_000_000))
    snap = ledger.snapshot(PricesConfig())
    assert snap["tokens"] == {
        "text_in": 1_000_000,
        "audio_in": 1_000_000,
        "cached_in": 0,
        "text_out": 0,
        "audio_out": 1_000_000,
    }
    assert snap["cost_usd_estimate"] == pytest.approx(4.0 + 32.0 + 64.0)
    assert snap["engagement_cost_usd_estimate"] == pytest.approx(32.0)


def test_rate_limits_are_bounded_and_checked() -> None:
    limits = parse_rate_limits(
        [{"name": "requests", "limit": 100, "remaining": 99, "reset_seconds": 1.5}, "junk"]
        + [{"name": "evil" * 100, "limit": -1, "reset_seconds": "soon"}] * 50
    )
    assert limits[0] == {"name": "requests", "limit": 100, "remaining": 99, "reset_seconds": 1.5}
    assert len(limits) < 10
    assert limits[1] == {"name": "other", "limit": 0, "remaining": 0, "reset_seconds": None}


def test_the_session_controls_go_out_as_the_sdk_types_say() -> None:
    config = parse_config(
        """
realtime:
  reasoning_effort: low
  truncation_retention_ratio: 0.6
  prompt: {id: pmpt_abc, version: "3", variables: {city: Paris}}
  tool_choice: required
  parallel_tool_calls: false
"""
    )
    session = build_session_config(
        config.realtime, [ToolSpec("lamp", "the lamp", {"type": "object", "properties": {}})]
    )
    assert session["reasoning"] == {"effort": "low"}
    assert session["truncation"] == {"type": "retention_ratio", "retention_ratio": 0.6}
    assert session["prompt"] == {"id": "pmpt_abc", "version": "3", "variables": {"city": "Paris"}}
    assert (session["tool_choice"], session["parallel_tool_calls"]) == ("required", False)
    assert validate_client_event({"type": "session.update", "session": session}) == []
    plain = build_session_config(parse_config("realtime: {}").realtime, [])
    assert not {"reasoning", "truncation", "prompt", "parallel_tool_calls"} & set(plain)


@pytest.mark.parametrize(
    ("server", "key"),
    [
        ("{server_label: 'home lab', server_url: 'https://x.example'}", "server_label"),
        ("{server_label: home, server_url: 'http://x.example'}", "server_url"),
        ("{server_label: home, server_url: 'https://x.example', approve: [a]}", "approve"),
    ],
)
def test_an_mcp_server_that_is_not_one_names_its_key(server: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"realtime\.mcp_servers\[0\]\.{key}"):
        parse_config(f"realtime:\n  mcp_servers: [{server}]\n")


def test_an_mcp_server_goes_out_as_the_sdk_types_say() -> None:
    config = parse_config(
        "realtime:\n  mcp_servers: [{server_label: home, server_url: 'https://x.example/mcp', allowed_tools: [a]}]\n"
    )
    entry = mcp_tool(config.realtime.mcp_servers[0], "tok")
    session = build_session_config(config.realtime, [], mcp=[entry])
    assert session["tools"] == [
        {
            "type": "mcp",
            "server_label": "home",
            "server_url": "https://x.example/mcp",
            "require_approval": "never",
            "allowed_tools": ["a"],
            "authorization": "tok",
        }
    ]
    assert session["tool_choice"] == "auto"
    assert validate_client_event({"type": "session.update", "session": session}) == []
