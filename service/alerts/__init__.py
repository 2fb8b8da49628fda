"""Alerts: from a monitor's severity change to its receivers, at least once."""
