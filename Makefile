.PHONY: demo test test-fast install lint

# .ci/install puts overnight's dependencies in .venv/ where the system Python refuses pip; its
# python3 then comes first here, as in .ci/run.
export PATH := $(CURDIR)/.venv/bin:$(PATH)

demo:
	bash examples/demo.sh

# What the tests need (redis-server, git, gcc, the test extras); `bash .ci/install --docker` adds
# a Docker engine and the base image for the tests marked docker, which skip without one.
install:
	bash .ci/install

test: install
	python3 -m pytest

# The inner loop: everything but the tests marked slow.
test-fast: install
	python3 -m pytest -m "not slow"

lint: install
	ruff check overnight tests bench examples
	ruff format --check overnight tests bench examples
	mypy
