"""Alerts: from a monitor's severity change to its receivers, at least once.

observer (offers the engine's verdicts to the alert state shared by every replica),
store (the alert store protocol) with its memory and redis (+ alert.lua) backends,
payloads (what each receiver type is sent), targets (refusing link-local and metadata
addresses), dispatch (delivery with retries, claiming and dead letters) and history
(what the API shows, and acknowledgements).
"""
