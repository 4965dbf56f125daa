"""Comparing runs from their stored snapshots and records: the code as a diff between the two
exact trees (codediff), the rest side by side (fields), the whole comparison (report)."""
