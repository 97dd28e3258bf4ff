# event-tracker: every target is a line or two; scripts/ holds the longer ones.
.DEFAULT_GOAL := help
UV = $$(scripts/bootstrap.sh)

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

install: ## Install uv (if missing) and the locked workspace
	@scripts/bootstrap.sh >/dev/null

run: ## Start the whole stack locally (embedded database unless MONGODB_URL is set)
	@$(UV) run --frozen python scripts/run_stack.py

test: ## Run every test (installs what it needs, starts RabbitMQ/Redis if stopped)
	@scripts/test.sh

lint: ## ruff (lint + format check) and mypy --strict
	@$(UV) run --frozen ruff check . && $(UV) run --frozen ruff format --check . && $(UV) run --frozen mypy

format: ## Apply ruff's formatting and safe fixes
	@$(UV) run --frozen ruff format . && $(UV) run --frozen ruff check --fix .

asyncapi: ## Regenerate asyncapi.yaml from the code and the tracking plan (tracking-plan/)
	@TRACKING_PLAN_DIR=tracking-plan $(UV) run --frozen faststream docs gen --factory processor.app:create_asyncapi_app --yaml --out asyncapi.yaml

plan-check: ## Refuse a tracking-plan change that breaks its version (against the previous main)
	@scripts/plan_check.sh

asyncapi-renderer: ## Re-vendor the /asyncapi page's renderer from npm (RENDERER_VERSION=x.y.z; default: the pinned one)
	@$(UV) run --frozen python scripts/vendor_renderer.py asyncapi $(RENDERER_VERSION)

swagger-ui: ## Re-vendor the /docs page's Swagger UI from npm (RENDERER_VERSION=x.y.z; default: the pinned one)
	@$(UV) run --frozen python scripts/vendor_renderer.py swagger-ui $(RENDERER_VERSION)

bench: ## Measure throughput and latency (BENCH_ARGS=--quick: a few minutes; BASELINE=dir: side by side)
	@$(UV) run --frozen python -m bench $(if $(BASELINE),--baseline "$(BASELINE)") $(BENCH_ARGS)

compose-check: ## Validate both Compose files (single node, cluster) against the Compose specification
	@scripts/check_compose.sh

.PHONY: help install run test lint format asyncapi plan-check asyncapi-renderer swagger-ui bench compose-check
