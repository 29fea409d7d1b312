"""earshot: a voice-appliance daemon for the OpenAI Realtime API (GA interface)."""

__version__ = "0.1.0"
