"""Logs, metrics and traces: what operators see of each request."""
