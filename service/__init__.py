"""driftline: real-time feature-drift monitoring for ML models in production."""

__version__ = "0.1.0"
