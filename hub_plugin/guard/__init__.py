"""The guard service: nbguard's trusted, hub-managed service (decisions, broker, elevation)."""
