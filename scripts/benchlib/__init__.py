"""The benchmark harness behind ``scripts/bench``: component CPU, daemon runs, the report."""
