"""The token service: the one place a fleet's real API key lives.

Devices ask it for an ephemeral Realtime client secret (``realtime.auth.token_url``), proving
who they are with a per-device token or a client certificate; it mints the secret upstream with
the session pinned (model, instructions, tools), within a per-device rate and daily cap.

- :mod:`.registry`: the enrolled devices and how they authenticate (pure);
- :mod:`.policy`: rate, daily cap and session pinning (pure);
- :mod:`.config`: its YAML file, checked like the daemon's;
- :mod:`.server`: the HTTP service (edge);
- :mod:`.cli`: ``earshot token-service run|enrol|revoke|list``.
"""
