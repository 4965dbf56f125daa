"""The docker environment: environment images built in containers, cached by key, and task
containers."""
