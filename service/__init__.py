"""driftline: real-time feature-drift monitoring for ML models in production.

`driftline.compare(reference, current)` judges data offline, in a notebook or a CI job
(driftline.reporting); it is imported on first use, so `import driftline` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from driftline.reporting import compare


def __getattr__(name: str) -> Any:
    if name == "compare":
        from driftline.reporting import compare

        return compare
    raise AttributeError(f"module 'driftline' has no attribute {name!r}")


__all__ = ["__version__", "compare"]
