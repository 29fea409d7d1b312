"""earshot.emulator package."""
