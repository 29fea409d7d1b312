"""earshot.audio package."""
