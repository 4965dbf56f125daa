"""The venv environment: uv-built venvs cached by key, and the interpreters they are made from."""
