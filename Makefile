.PHONY: demo test lint

demo:
	bash examples/demo.sh

test:
	python3 -m pytest

lint:
	ruff check overnight tests bench examples
	ruff format --check overnight tests bench examples
	mypy
