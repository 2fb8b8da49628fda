"""The web UI: a page shell and static assets shipped in the package, read from the JSON API."""
