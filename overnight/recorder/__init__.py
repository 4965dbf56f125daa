"""Turn a working tree into a task spec: git state, patch, bundle, requirements, command."""
