# Everyday commands. Each target is a script in scripts/ that a newcomer can also run directly.
.PHONY: up down test lint bench base-image image

up:          ## Docker + venv + base image + orchestrator + example plugin ACTIVE
	bash scripts/up.sh

down:        ## disable plugins and stop the orchestrator started by `make up`
	bash scripts/down.sh

test:        ## the whole suite against real Docker, PostgreSQL, Redis and a registry
	bash scripts/test.sh

lint:
	.venv/bin/ruff check orchestrator sdk tests bench examples
	.venv/bin/ruff format --check orchestrator sdk tests bench examples
	.venv/bin/mypy

base-image:  ## (re)build summit/plugin-python (pass ARGS=--force to rebuild)
	bash plugin-base-images/build.sh $(ARGS)

image:       ## (re)build summit/orchestrator, prints its size (pass ARGS=--force to rebuild)
	bash scripts/build-orchestrator-image.sh $(ARGS)

bench:       ## cold-start benchmark (prints figures)
	.venv/bin/python bench/cold_start.py
