"""The GA ``session`` object a session sends in ``session.update`` (PROTOCOL.md §2.1), from the config."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from earshot.config import McpServerConfig, ProfileConfig, RealtimeConfig
from earshot.realtime.toolspec import ToolSpec

__all__ = ["MINTED_KEYS", "build_session_config", "mcp_tool", "minted_update", "with_profile"]

MINTED_KEYS = ("model", "instructions", "tools", "tool_choice")
"""What a session opened with a minted secret already has: a token service may have pinned them."""


def minted_update(session: Mapping[str, Any]) -> dict[str, Any]:
    """``session`` for the ``session.update`` of a session opened with an ephemeral secret.

    The secret was minted with the same session (:func:`build_session_config` of the same
    profile), and a token service may have replaced the model, the instructions and the tools
    with the fleet's (PROTOCOL.md §1.4: a client connection could override them). The update
    leaves them as the secret made them and sets only what is the device's own: audio, turn
    detection, voice.
    """
    return {k: v for k, v in session.items() if k not in MINTED_KEYS}


def with_profile(
    config: RealtimeConfig,
    tools: Sequence[ToolSpec],
    mcp: Sequence[Mapping[str, Any]],
    profile: ProfileConfig | None,
) -> tuple[RealtimeConfig, tuple[ToolSpec, ...], tuple[Mapping[str, Any], ...]]:
    """The session's config, function tools and MCP entries under ``profile`` (a wake word's; None: as is).

    A profile replaces the instructions and the voice it gives, and offers only the tools it names
    (function names or MCP server labels).
    """
    if profile is None:
        return config, tuple(tools), tuple(mcp)
    changes: dict[str, Any] = {}
    if profile.instructions is not None:
        changes["instructions"] = profile.instructions
    if profile.voice is not None:
        changes["voice"] = profile.voice
    if profile.tools is not None:
        allowed = set(profile.tools)
        tools = [t for t in tools if t.name in allowed]
        mcp = [m for m in mcp if m.get("server_label") in allowed]
    return dataclasses.replace(config, **changes), tuple(tools), tuple(mcp)


def mcp_tool(server: McpServerConfig, authorization: str | None) -> dict[str, Any]:
    """The session's ``tools`` entry for a remote MCP server (``authorization`` read from its file)."""
    tool: dict[str, Any] = {
        "type": "mcp",
        "server_label": server.server_label,
        "server_url": server.server_url,
        "require_approval": server.require_approval,
    }
    if server.allowed_tools:
        tool["allowed_tools"] = list(server.allowed_tools)
    if authorization:
        tool["authorization"] = authorization
    return tool


def build_session_config(
    config: RealtimeConfig, tools: Sequence[ToolSpec] = (), *, mcp: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """The GA ``session`` object for ``session.update`` (PROTOCOL.md §2.1), every VAD field explicit.

    ``mcp``: the remote MCP servers' tool entries (:func:`mcp_tool`), after the function tools.
    """
    audio_format: dict[str, Any]
    if config.format == "pcm16":
        audio_format = {"type": "audio/pcm", "rate": 24000}
    elif config.format == "g711_ulaw":
        audio_format = {"type": "audio/pcmu"}
    else:
        audio_format = {"type": "audio/pcma"}
    td = config.turn_detection
    turn_detection: dict[str, Any] | None
    if td.type == "server_vad":
        turn_detection = {
            "type": "server_vad",
            "threshold": td.threshold,
            "prefix_padding_ms": td.prefix_padding_ms,
            "silence_duration_ms": td.silence_duration_ms,
            "idle_timeout_ms": td.idle_timeout_ms,
            "create_response": td.create_response,
            "interrupt_response": td.interrupt_response,
        }
    elif td.type == "semantic_vad":
        turn_detection = {
            "type": "semantic_vad",
            "eagerness": td.eagerness,
            "create_response": td.create_response,
            "interrupt_response": td.interrupt_response,
        }
    else:
        turn_detection = None
    transcription: dict[str, Any] | None = None
    if config.transcription.model:
        transcription = {"model": config.transcription.model}
        if config.transcription.language:
            transcription["language"] = config.transcription.language
        if config.transcription.prompt:
            transcription["prompt"] = config.transcription.prompt
    session: dict[str, Any] = {
        "type": "realtime",
        "model": config.model,
        "instructions": config.instructions,
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": dict(audio_format),
                "noise_reduction": None if config.noise_reduction == "off" else {"type": config.noise_reduction},
                "transcription": transcription,
                "turn_detection": turn_detection,
            },
            "output": {"format": dict(audio_format), "voice": config.voice, "speed": config.speed},
        },
        "tools": [t.to_session_tool() for t in tools],
        "tool_choice": config.tool_choice if tools else "none",
        "max_output_tokens": config.max_output_tokens if config.max_output_tokens is not None else "inf",
    }
    if config.reasoning_effort is not None:
        session["reasoning"] = {"effort": config.reasoning_effort}
    if config.truncation_retention_ratio is not None:
        session["truncation"] = {"type": "retention_ratio", "retention_ratio": config.truncation_retention_ratio}
    if config.prompt.id:
        prompt: dict[str, Any] = {"id": config.prompt.id}
        if config.prompt.version:
            prompt["version"] = config.prompt.version
        if config.prompt.variables:
            prompt["variables"] = dict(config.prompt.variables)
        session["prompt"] = prompt
    if mcp:
        session["tools"] = [*session["tools"], *(dict(tool) for tool in mcp)]
        session["tool_choice"] = config.tool_choice
    if config.parallel_tool_calls is not None and session["tools"]:
        session["parallel_tool_calls"] = config.parallel_tool_calls
    return session
