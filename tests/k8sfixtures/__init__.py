"""Kubernetes test doubles and fixtures shared by the unit tests (no API server exists on our machines)."""
