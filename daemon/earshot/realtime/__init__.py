"""earshot.realtime package."""
