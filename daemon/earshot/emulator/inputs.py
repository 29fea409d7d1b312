"""What a client puts into the emulated conversation: its input audio buffer and its items.

:class:`ClientInputs` is a base of :class:`~earshot.emulator.protocol.ServerSession` (one server-side
state machine, in two modules for length): ``input_audio_buffer.append`` / ``commit`` / ``clear``
with the server VAD's speech start and stop, and ``conversation.item.create`` / ``delete`` /
``retrieve`` / ``truncate``, each checked as the real service checks it (the refusals are its
errors, word for word where PROTOCOL.md quotes them). Sans I/O, like the rest of the core.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import earshot.emulator.voice as voice
from earshot.emulator.options import Truncation
from earshot.emulator.vad import VadStarted, VadStopped
from earshot.emulator.wire import MIN_COMMIT_MS, ServerError, new_id, strip_audio

if TYPE_CHECKING:
    from earshot.emulator.inputbuffer import InputBuffer
    from earshot.emulator.options import FunctionCall, SessionRecord
    from earshot.emulator.replies import Response

__all__ = ["ClientInputs"]

logger = logging.getLogger("earshot.emulator.server")


class ClientInputs:
    """The server's handling of the client's input audio and items (see the module docstring)."""

    if TYPE_CHECKING:  # what the session itself provides
        session: dict[str, Any]
        record: SessionRecord
        input: InputBuffer
        response: Response | None
        audio_sent: dict[str, tuple[int, int]]
        calls: dict[str, str]
        pending_texts: list[str]
        pending_audio_ms: int
        pending_outputs: list[tuple[str, str]]
        mcp_requests: dict[str, FunctionCall]
        mcp_decided: list[tuple[FunctionCall, bool]]

        def emit(self, event: dict[str, Any]) -> None:
            """Send a server event."""

        def _cancel(self, response: Response, reason: str) -> None: ...
        def _start_response(self, params: dict[str, Any], client_event_id: str | None) -> None: ...

    # --- input audio -----------------------------------------------------------------------------------------

    @property
    def _in_fmt(self) -> dict[str, Any]:
        fmt: dict[str, Any] = self.session["audio"]["input"]["format"]
        return fmt

    @property
    def out_fmt(self) -> dict[str, Any]:
        """The session's output audio format object."""
        fmt: dict[str, Any] = self.session["audio"]["output"]["format"]
        return fmt

    def _turn_detection(self) -> dict[str, Any] | None:
        td = self.session["audio"]["input"].get("turn_detection")
        return td if isinstance(td, dict) else None

    def _on_input_audio_buffer_append(self, event: dict[str, Any]) -> None:
        try:
            pcm = voice.from_wire(event["audio"], self._in_fmt)
        except ValueError as exc:
            raise ServerError(f"Invalid audio: {exc}", code="invalid_value", param="audio") from exc
        rate = voice.format_rate_hz(self._in_fmt)
        self.record.add_audio(pcm, rate)
        for vad_event in self.input.append(pcm, rate, self._turn_detection()):
            if isinstance(vad_event, VadStarted):
                self._speech_started(vad_event.audio_start_ms)
            elif isinstance(vad_event, VadStopped):
                self._speech_stopped(vad_event.audio_end_ms)

    def _speech_started(self, audio_start_ms: int) -> None:
        self.input.speech_item_id = new_id("item")
        logger.debug("session %d: speech started at %d ms", self.record.index, audio_start_ms)
        self.emit(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": audio_start_ms,
                "item_id": self.input.speech_item_id,
            }
        )
        td = self._turn_detection() or {}
        if td.get("interrupt_response", True) and self.response is not None:
            self._cancel(self.response, "turn_detected")

    def _speech_stopped(self, audio_end_ms: int) -> None:
        item_id = self.input.speech_item_id or new_id("item")
        self.emit({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": audio_end_ms, "item_id": item_id})
        self._commit(item_id)
        td = self._turn_detection() or {}
        if td.get("create_response", True) and self.response is None:
            self._start_response({}, None)

    def _commit(self, item_id: str) -> None:
        rate = self.input.rate_hz
        pcm = self.input.take()
        audio_ms = pcm.size * 1000 // rate
        previous = next(reversed(self.record.items), None)
        self.emit({"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": previous})
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        self.record.user_audio[item_id] = voice.resample(pcm, rate, voice.RATE_HZ)
        self.pending_audio_ms += audio_ms
        logger.info("session %d: user turn committed (%d ms of audio)", self.record.index, audio_ms)
        self._add_item(item, previous)
        self._transcribe(item_id, audio_ms)

    def _transcribe(self, item_id: str, audio_ms: int) -> None:
        """With ``audio.input.transcription`` set: the input transcription, in two deltas then completed.

        The emulator hears no words: the transcript names the turn's length (what a test can check).
        """
        config = self.session["audio"]["input"].get("transcription")
        if not isinstance(config, dict) or not config.get("model"):
            return
        text = f"user audio of {audio_ms} milliseconds"
        half = len(text) // 2
        for piece in (text[:half], text[half:]):
            self.emit(
                {
                    "type": "conversation.item.input_audio_transcription.delta",
                    "item_id": item_id,
                    "content_index": 0,
                    "delta": piece,
                }
            )
        self.emit(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": text,
                "usage": {"type": "duration", "seconds": audio_ms / 1000},
            }
        )

    def _add_item(self, item: dict[str, Any], previous: str | None) -> None:
        self.record.items[item["id"]] = item
        self.emit({"type": "conversation.item.added", "item": item, "previous_item_id": previous})
        self.emit({"type": "conversation.item.done", "item": item, "previous_item_id": previous})

    def _on_input_audio_buffer_commit(self, event: dict[str, Any]) -> None:
        ms = self.input.ms
        if ms < MIN_COMMIT_MS:
            raise ServerError(
                f"Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
                f"but buffer only has {ms:.2f}ms of audio.",
                code="input_audio_buffer_commit_empty",
            )
        self._commit(self.input.speech_item_id or new_id("item"))

    def _on_input_audio_buffer_clear(self, event: dict[str, Any]) -> None:
        self.input.clear()
        self.emit({"type": "input_audio_buffer.cleared"})

    def _on_output_audio_buffer_clear(self, event: dict[str, Any]) -> None:
        raise ServerError("output_audio_buffer.clear is only supported for WebRTC and SIP.", code="invalid_value")

    # --- conversation items ----------------------------------------------------------------------------------

    def _on_conversation_item_create(self, event: dict[str, Any]) -> None:
        item = dict(event["item"])
        previous = event.get("previous_item_id")
        if item.get("id") in self.record.items:
            raise ServerError(f"Item with id '{item['id']}' already exists.", code="invalid_value", param="item.id")
        if previous is not None and previous != "root" and previous not in self.record.items:
            raise ServerError(f"Item with id '{previous}' not found.", code="item_not_found", param="previous_item_id")
        kind = item.get("type")
        content = item.get("content", [])
        if item.get("role") == "assistant" and any(part.get("type") == "output_audio" for part in content):
            raise ServerError(
                "You cannot populate assistant audio messages.", code="invalid_value", param="item.content"
            )
        if kind == "function_call_output" and item.get("call_id") not in self.calls:
            raise ServerError(
                f"No tool call found for function call output with call_id {item.get('call_id')}.",
                code="invalid_value",
                param="item.call_id",
            )
        item.setdefault("id", new_id("item"))
        item["object"] = "realtime.item"
        item["status"] = "completed"
        if kind == "message":
            for part in item.get("content", []):
                if part.get("type") == "input_text" and item.get("role") in ("user", "system"):
                    self.pending_texts.append(str(part.get("text", "")))
                elif part.get("type") == "input_audio" and isinstance(part.get("audio"), str):
                    try:
                        pcm = voice.from_wire(part["audio"], self._in_fmt)
                    except ValueError as exc:
                        raise ServerError(f"Invalid audio: {exc}", code="invalid_value", param="item.content") from exc
                    rate = voice.format_rate_hz(self._in_fmt)
                    self.record.user_audio[item["id"]] = voice.resample(pcm, rate, voice.RATE_HZ)
                    self.pending_audio_ms += pcm.size * 1000 // rate
        elif kind == "function_call":
            self.calls[str(item.get("call_id"))] = str(item.get("name"))
        elif kind == "function_call_output":
            self.pending_outputs.append((self.calls[str(item["call_id"])], str(item.get("output", ""))))
        elif kind == "mcp_approval_response":
            request = self.mcp_requests.pop(str(item.get("approval_request_id")), None)
            if request is None:
                raise ServerError("No MCP approval request with that id.", code="invalid_value", param="item")
            self.mcp_decided.append((request, bool(item.get("approve"))))
        item = strip_audio(item)
        if previous == "root":
            self.record.items = {item["id"]: item, **self.record.items}
        elif previous is not None:
            items = list(self.record.items.items())
            at = [k for k, _ in items].index(previous) + 1
            items.insert(at, (item["id"], item))
            self.record.items = dict(items)
        else:
            previous = next(reversed(self.record.items), None)
            self.record.items[item["id"]] = item
        self.emit({"type": "conversation.item.added", "item": item, "previous_item_id": previous})
        self.emit({"type": "conversation.item.done", "item": item, "previous_item_id": previous})

    def _on_conversation_item_delete(self, event: dict[str, Any]) -> None:
        item_id = event["item_id"]
        if self.record.items.pop(item_id, None) is None:
            raise ServerError(f"Item with id '{item_id}' not found.", code="item_not_found", param="item_id")
        self.emit({"type": "conversation.item.deleted", "item_id": item_id})

    def _on_conversation_item_retrieve(self, event: dict[str, Any]) -> None:
        item = self.record.items.get(event["item_id"])
        if item is None:
            raise ServerError(f"Item with id '{event['item_id']}' not found.", code="item_not_found", param="item_id")
        self.emit({"type": "conversation.item.retrieved", "item": item})

    def _on_conversation_item_truncate(self, event: dict[str, Any]) -> None:
        item_id, content_index, end_ms = event["item_id"], event["content_index"], event["audio_end_ms"]
        sent = self.audio_sent.get(item_id)
        sent_ms = sent[0] * 1000 // sent[1] if sent else None
        truncation = Truncation(item_id, content_index, end_ms, sent_ms, None)
        self.record.truncations.append(truncation)
        item = self.record.items.get(item_id)
        try:
            if item is None:
                raise ServerError(f"Item with id '{item_id}' not found.", code="item_not_found", param="item_id")
            if item.get("role") != "assistant" or sent is None or sent[0] == 0:
                raise ServerError("Only model output audio messages can be truncated", param="item_id")
            if content_index != 0:
                raise ServerError(
                    f"Content index {content_index} does not exist.", code="invalid_value", param="content_index"
                )
            assert sent_ms is not None
            if end_ms > sent_ms:
                raise ServerError(
                    f"Audio content of {sent_ms}ms is already shorter than {end_ms}ms", param="audio_end_ms"
                )
        except ServerError as exc:
            truncation.error = exc.message
            logger.info("session %d: truncate %s at %d ms refused: %s", self.record.index, item_id, end_ms, exc.message)
            raise
        logger.info("session %d: truncate %s at %d ms (%s ms sent)", self.record.index, item_id, end_ms, sent_ms)
        for part in item.get("content", []):
            if part.get("type") == "output_audio":
                part["transcript"] = ""  # the server drops the unheard transcript
        self.emit(
            {"type": "conversation.item.truncated", "item_id": item_id, "content_index": 0, "audio_end_ms": end_ms}
        )
