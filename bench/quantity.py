"""Kubernetes resource quantities ("500m", "1Gi") as numbers.

For the manifests' tests, and for the bench, which compares measured memory with a
manifest's limit.
"""

from __future__ import annotations

import re

_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIX = {
    "": 1.0,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
}


def quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity ("500m", "1Gi", 2) as a number."""
    match = _QUANTITY.match(str(value))
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError(f"unexpected quantity {value!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2)]
