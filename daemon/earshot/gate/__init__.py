"""earshot.gate package."""
