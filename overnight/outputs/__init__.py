"""A task's output files: collected by its agent, kept in an output store, pulled to the laptop."""
