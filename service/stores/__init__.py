"""Window stores: where the counts of every monitor's sliding window are kept.

The protocol every backend follows (protocol), the in-process backend (memory), and the
Redis backend with its Lua script (redis, window.lua) on a client shared with the alert
store (redis_client). Stores know the core's window types and nothing above them.
"""
