"""The pure core: statistics, baselines, monitors, binning and reports.

Nothing here does I/O beyond reading baseline and receiver files, and nothing imports
aiohttp, redis or any other layer of driftline (tests/test_layers.py checks it).
"""
