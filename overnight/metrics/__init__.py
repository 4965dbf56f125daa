"""Scalar metrics a run reports: read from its output with no SDK, summarised on its record."""
