"""driftline's benchmark suite: `python -m bench` (see bench/run.py and docs/labels.md)."""
