"""The agent's main loop and its upkeep: taking tasks (the RQ worker face, intake), housekeeping
(cancels, heartbeats, lost tasks), adoption, leftovers of killed agents, windows, host faults."""
