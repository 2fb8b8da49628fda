"""The engine: events in, shared windows counted, verdicts out.

admission (which events may be counted), commit (group commit: one store call per
monitor per flush), verdicts (the latest assessment of each monitor, published to
metrics and listeners), registry (monitor configs, hot reload, alert receivers) and
facade (`DriftEngine`, what the HTTP layer calls to count and report). It knows
nothing of HTTP or of alerts: the alerts layer listens to the verdicts.
"""
