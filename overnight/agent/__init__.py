"""The worker side: rebuild the tree and environment, run the task, report back."""
