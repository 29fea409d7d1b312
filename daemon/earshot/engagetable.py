"""The engagement machine's phases, inputs and transition table (:mod:`earshot.engage` runs it).

Total over (phase, input): every input has an entry in every phase; ``None`` marks an input that is
meaningless in that phase (a late network event) and is dropped. Pure data.
"""

from __future__ import annotations

import enum

__all__ = ["TRANSITIONS", "Input", "Phase"]


class Phase(enum.Enum):
    """What the appliance is doing, as the user perceives it."""

    IDLE = "idle"
    CONNECTING = "connecting"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    FOLLOW_UP = "follow_up"


class Input(enum.Enum):
    """The inputs of the table."""

    ENGAGE = "engage"
    SESSION_READY = "session_ready"
    SPEECH_STARTED = "speech_started"
    END_OF_TURN = "end_of_turn"
    REPLY_STARTED = "reply_started"
    REPLY_PLAYED = "reply_played"
    RESPONSE_DONE = "response_done"
    BARGE_IN = "barge_in"
    CANCEL = "cancel"
    TIMEOUT = "timeout"
    CONNECTION_LOST = "connection_lost"
    OFFLINE = "offline"
    FAILED = "failed"
    ANNOUNCE = "announce"


P, In = Phase, Input
_IGNORE = None
"""Table value meaning: the input is meaningless in this phase (late network event); drop it."""

# (phase, input) -> next phase, or _IGNORE. Anything absent is a bug and raises.
TRANSITIONS: dict[tuple[Phase, Input], Phase | None] = {
    # IDLE: only engagement moves it; late events of a closed engagement are ignored. An announcement
    # (`earshot say`) goes straight to waiting for its reply: there is no turn of the user's.
    (P.IDLE, In.ENGAGE): P.CONNECTING,
    (P.IDLE, In.SESSION_READY): _IGNORE,
    (P.IDLE, In.SPEECH_STARTED): _IGNORE,
    (P.IDLE, In.END_OF_TURN): _IGNORE,
    (P.IDLE, In.REPLY_STARTED): _IGNORE,
    (P.IDLE, In.REPLY_PLAYED): _IGNORE,
    (P.IDLE, In.RESPONSE_DONE): _IGNORE,
    (P.IDLE, In.BARGE_IN): _IGNORE,
    (P.IDLE, In.CANCEL): _IGNORE,
    (P.IDLE, In.TIMEOUT): _IGNORE,
    (P.IDLE, In.CONNECTION_LOST): _IGNORE,
    (P.IDLE, In.OFFLINE): _IGNORE,
    (P.IDLE, In.FAILED): P.IDLE,
    (P.IDLE, In.ANNOUNCE): P.THINKING,
    # CONNECTING: waiting for session.updated; the uplink is buffering.
    (P.CONNECTING, In.ENGAGE): _IGNORE,
    (P.CONNECTING, In.SESSION_READY): P.LISTENING,
    (P.CONNECTING, In.SPEECH_STARTED): _IGNORE,
    (P.CONNECTING, In.END_OF_TURN): _IGNORE,
    (P.CONNECTING, In.REPLY_STARTED): _IGNORE,
    (P.CONNECTING, In.REPLY_PLAYED): _IGNORE,
    (P.CONNECTING, In.RESPONSE_DONE): _IGNORE,
    (P.CONNECTING, In.BARGE_IN): _IGNORE,
    (P.CONNECTING, In.CANCEL): P.IDLE,
    (P.CONNECTING, In.TIMEOUT): P.IDLE,
    (P.CONNECTING, In.CONNECTION_LOST): P.CONNECTING,
    (P.CONNECTING, In.OFFLINE): P.IDLE,
    (P.CONNECTING, In.FAILED): P.IDLE,
    (P.CONNECTING, In.ANNOUNCE): _IGNORE,
    # LISTENING: the user's turn is being streamed.
    (P.LISTENING, In.ENGAGE): _IGNORE,
    (P.LISTENING, In.SESSION_READY): P.LISTENING,
    (P.LISTENING, In.SPEECH_STARTED): P.LISTENING,
    (P.LISTENING, In.END_OF_TURN): P.THINKING,
    (P.LISTENING, In.REPLY_STARTED): P.SPEAKING,
    (P.LISTENING, In.REPLY_PLAYED): _IGNORE,
    (P.LISTENING, In.RESPONSE_DONE): _IGNORE,
    (P.LISTENING, In.BARGE_IN): _IGNORE,
    (P.LISTENING, In.CANCEL): P.IDLE,
    (P.LISTENING, In.TIMEOUT): P.IDLE,
    (P.LISTENING, In.CONNECTION_LOST): P.LISTENING,
    (P.LISTENING, In.OFFLINE): P.IDLE,
    (P.LISTENING, In.FAILED): P.IDLE,
    (P.LISTENING, In.ANNOUNCE): _IGNORE,
    # THINKING: the turn is committed; waiting for the reply's first sample to play.
    (P.THINKING, In.ENGAGE): _IGNORE,
    (P.THINKING, In.SESSION_READY): P.THINKING,
    (P.THINKING, In.SPEECH_STARTED): P.LISTENING,
    (P.THINKING, In.END_OF_TURN): P.THINKING,
    (P.THINKING, In.REPLY_STARTED): P.SPEAKING,
    (P.THINKING, In.REPLY_PLAYED): P.FOLLOW_UP,
    (P.THINKING, In.RESPONSE_DONE): P.FOLLOW_UP,
    (P.THINKING, In.BARGE_IN): _IGNORE,
    (P.THINKING, In.CANCEL): P.IDLE,
    (P.THINKING, In.TIMEOUT): P.IDLE,
    (P.THINKING, In.CONNECTION_LOST): P.THINKING,
    (P.THINKING, In.OFFLINE): P.IDLE,
    (P.THINKING, In.FAILED): P.IDLE,
    (P.THINKING, In.ANNOUNCE): _IGNORE,
    # SPEAKING: the reply is playing; the uplink is paused until a barge-in.
    (P.SPEAKING, In.ENGAGE): _IGNORE,
    (P.SPEAKING, In.SESSION_READY): P.SPEAKING,
    (P.SPEAKING, In.SPEECH_STARTED): _IGNORE,
    (P.SPEAKING, In.END_OF_TURN): _IGNORE,
    (P.SPEAKING, In.REPLY_STARTED): P.SPEAKING,
    (P.SPEAKING, In.REPLY_PLAYED): P.FOLLOW_UP,
    (P.SPEAKING, In.RESPONSE_DONE): _IGNORE,
    (P.SPEAKING, In.BARGE_IN): P.LISTENING,
    (P.SPEAKING, In.CANCEL): P.IDLE,
    (P.SPEAKING, In.TIMEOUT): P.IDLE,
    (P.SPEAKING, In.CONNECTION_LOST): P.SPEAKING,
    (P.SPEAKING, In.OFFLINE): P.IDLE,
    (P.SPEAKING, In.FAILED): P.IDLE,
    (P.SPEAKING, In.ANNOUNCE): _IGNORE,
    # FOLLOW_UP: listening locally without the wake word; speech resumes the conversation.
    (P.FOLLOW_UP, In.ENGAGE): P.LISTENING,
    (P.FOLLOW_UP, In.SESSION_READY): P.FOLLOW_UP,
    (P.FOLLOW_UP, In.SPEECH_STARTED): P.LISTENING,
    (P.FOLLOW_UP, In.END_OF_TURN): _IGNORE,
    (P.FOLLOW_UP, In.REPLY_STARTED): P.SPEAKING,
    (P.FOLLOW_UP, In.REPLY_PLAYED): _IGNORE,
    (P.FOLLOW_UP, In.RESPONSE_DONE): _IGNORE,
    (P.FOLLOW_UP, In.BARGE_IN): _IGNORE,
    (P.FOLLOW_UP, In.CANCEL): P.IDLE,
    (P.FOLLOW_UP, In.TIMEOUT): P.IDLE,
    (P.FOLLOW_UP, In.CONNECTION_LOST): P.FOLLOW_UP,
    (P.FOLLOW_UP, In.OFFLINE): P.IDLE,
    (P.FOLLOW_UP, In.FAILED): P.IDLE,
    (P.FOLLOW_UP, In.ANNOUNCE): _IGNORE,
}
