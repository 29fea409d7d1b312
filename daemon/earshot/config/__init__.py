"""Configuration: YAML into frozen, typed sections. The only package that reads YAML.

``load_config(path)`` returns a :class:`Config`; nothing downstream sees a dict. Validation is
strict and reports every problem at once, each naming the key path and the line::

    gate.vad.aggressiveness: must be 0..3, got 7 (line 12)
    gate.vad.agressiveness: unknown key; did you mean 'aggressiveness'? (line 13)

Schema: each section is a frozen dataclass. A field's metadata carries its bounds (``min``,
``max``), its documentation (``doc``) and, for strings, its allowed ``choices`` when the type is
not already a ``Literal``. ``config/earshot.yaml`` documents every key; a test keeps the two
in step.

The schema (the sections and their fields) is :mod:`earshot.config.schema`; reading, bounding and
checking a file is :mod:`earshot.config.load`. Everything is importable from here.

Secrets never live in YAML: the API key comes from ``$CREDENTIALS_DIRECTORY/openai-api-key``,
``$OPENAI_API_KEY`` or ``realtime.auth.key_file`` (see :mod:`earshot.realtime.auth`).
"""

from __future__ import annotations

from earshot.config.fleet import DeviceConfig, MqttConfig, device_id, device_labels
from earshot.config.load import (
    BUILTIN_FUNCTION_NAMES,
    MAX_CONFIG_BYTES,
    MAX_CONFIG_DEPTH,
    MAX_CONFIG_NODES,
    MAX_PATTERN_CHARS,
    check_realtime_url,
    load_config,
    parse_config,
    pattern_problem,
)
from earshot.config.schema import (
    AudioConfig,
    AuthConfig,
    BargeInConfig,
    Config,
    ControlConfig,
    EarconsConfig,
    EchoFeedConfig,
    GateConfig,
    GpioConfig,
    HistoryConfig,
    HooksConfig,
    InputConfig,
    LoggingConfig,
    McpServerConfig,
    MetricsConfig,
    OutputConfig,
    PricesConfig,
    ProfileConfig,
    PromptConfig,
    RealtimeConfig,
    ReconnectConfig,
    RecordingsConfig,
    SileroConfig,
    StopWordConfig,
    TimersConfig,
    ToolConfig,
    TranscriptionConfig,
    TurnDetectionConfig,
    VadConfig,
    WakewordConfig,
    WakewordEntryConfig,
    default_config,
    iter_keys,
)
from earshot.config.words import profile_named

__all__ = [
    "BUILTIN_FUNCTION_NAMES",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "MAX_CONFIG_NODES",
    "MAX_PATTERN_CHARS",
    "AudioConfig",
    "AuthConfig",
    "BargeInConfig",
    "Config",
    "ControlConfig",
    "DeviceConfig",
    "EarconsConfig",
    "EchoFeedConfig",
    "GateConfig",
    "GpioConfig",
    "HistoryConfig",
    "HooksConfig",
    "InputConfig",
    "LoggingConfig",
    "McpServerConfig",
    "MetricsConfig",
    "MqttConfig",
    "OutputConfig",
    "PricesConfig",
    "ProfileConfig",
    "PromptConfig",
    "RealtimeConfig",
    "ReconnectConfig",
    "RecordingsConfig",
    "SileroConfig",
    "StopWordConfig",
    "TimersConfig",
    "ToolConfig",
    "TranscriptionConfig",
    "TurnDetectionConfig",
    "VadConfig",
    "WakewordConfig",
    "WakewordEntryConfig",
    "check_realtime_url",
    "default_config",
    "device_id",
    "device_labels",
    "iter_keys",
    "load_config",
    "parse_config",
    "pattern_problem",
    "profile_named",
]
