"""HTTP: the aiohttp application, its handlers, route table and OpenAPI, schemas, problems.

The top of the service: it decodes requests, calls the engine and the alert log, and
encodes what they return. It knows no Redis key names and no statistics.
"""
