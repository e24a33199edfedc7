"""The guard service's HTTP handlers, one module per group of routes."""
