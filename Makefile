.PHONY: check test bench
check:
	bash scripts/check
test:
	bash scripts/test
bench:
	.venv/bin/python -m bench
