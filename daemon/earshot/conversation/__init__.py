"""The conversation: one sans-I/O core that decides (:mod:`.core`), and what it asks for (:mod:`.effects`)."""
