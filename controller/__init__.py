"""driftline Kubernetes operator (kopf); the reconcile logic lands with the operator issue."""
