.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
HOST ?= 127.0.0.1
PORT ?= 8000
REPLICAS ?= 2
PROMETHEUS_PORT ?= 9090

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

.PHONY: install
install: $(STAMP) ## create .venv and install agentlb with its dev dependencies

.PHONY: prometheus
prometheus: ## install Prometheus and promtool (Debian package) when missing
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus; }

.PHONY: test
test: $(STAMP) haproxy prometheus ## run the whole test suite (installs HAProxy and Prometheus for their tests when missing)
	$(BIN)/python -m pytest -q

.PHONY: lint
lint: $(STAMP) ## ruff
	$(BIN)/ruff check src tests benchmarks examples

.PHONY: format
format: $(STAMP) ## ruff format and fix
	$(BIN)/ruff check --fix src tests benchmarks examples
	$(BIN)/ruff format src tests benchmarks examples

.PHONY: typecheck
typecheck: $(STAMP) ## mypy --strict on src/
	$(BIN)/mypy

.PHONY: db
db: $(STAMP) ## create or upgrade the database
	$(BIN)/agentlb db upgrade

.PHONY: bootstrap
bootstrap: $(STAMP) ## database, demo fleet and a first model where there is none
	$(BIN)/agentlb bootstrap

.PHONY: serve
serve: bootstrap ## set everything up and serve the API on 127.0.0.1:8000
	$(BIN)/agentlb serve --host $(HOST) --port $(PORT)

.PHONY: haproxy
haproxy: ## install HAProxy (Debian package) when it is missing
	@command -v haproxy >/dev/null || test -x /usr/sbin/haproxy || \
		{ $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq haproxy; }

.PHONY: cluster
cluster: $(STAMP) haproxy ## REPLICAS replicas on local Redis + PostgreSQL behind HAProxy on 127.0.0.1:PORT
	$(BIN)/agentlb cluster --replicas $(REPLICAS) --host $(HOST) --port $(PORT)

.PHONY: train
train: $(STAMP) ## train from the store (or a simulated history when it has too little)
	$(BIN)/agentlb train --from-db --simulate-if-short

.PHONY: mlflow-ui
mlflow-ui: $(STAMP) ## the MLflow UI on 127.0.0.1:5000 to compare models
	$(BIN)/mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///var/mlflow.db --default-artifact-root var/mlartifacts

.PHONY: dashboards
dashboards: $(STAMP) ## regenerate deploy/ (Prometheus rules and config, Grafana dashboards) from src/agentlb/mixin
	$(BIN)/python -m agentlb.mixin deploy

.PHONY: observe
observe: $(STAMP) prometheus ## Prometheus with agentlb's rules on 127.0.0.1:$(PROMETHEUS_PORT), scraping $(HOST):$(PORT)
	mkdir -p var/prometheus
	sed 's/127.0.0.1:8000/$(HOST):$(PORT)/' deploy/prometheus/prometheus.yml > var/prometheus/prometheus.yml
	cp deploy/prometheus/recording.yml deploy/prometheus/alerts.yml var/prometheus/
	@echo "Prometheus: http://127.0.0.1:$(PROMETHEUS_PORT) (alerts: /alerts), scraping http://$(HOST):$(PORT)/metrics"
	@echo "Grafana: copy deploy/grafana/provisioning/* to /etc/grafana/provisioning/ and"
	@echo "  deploy/grafana/dashboards/*.json to /var/lib/grafana/dashboards/agentlb/, or import"
	@echo "  each JSON in Dashboards > New > Import and pick this Prometheus as the data source."
	prometheus --config.file=var/prometheus/prometheus.yml --storage.tsdb.path=var/prometheus/data \
		--web.listen-address=127.0.0.1:$(PROMETHEUS_PORT)

.PHONY: bench
bench: $(STAMP) ## selection micro-benchmark and the strategy benchmark
	$(BIN)/agentlb bench-select --agents 10,100,1000
	$(BIN)/agentlb benchmark --scenarios all --strategies all --seeds 5 --out var/benchmark

.PHONY: wrk
wrk: ## install wrk (Debian package), the HTTP load generator of the replica benchmark, when missing
	@command -v wrk >/dev/null || \
		{ $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk; }

.PHONY: bench-replicas
bench-replicas: $(STAMP) haproxy wrk ## throughput and decision quality through 1 and 2 replicas (local PostgreSQL + Redis)
	nice -n 10 $(BIN)/python benchmarks/replicas.py

.PHONY: clean
clean: ## remove generated state (keeps .venv)
	rm -rf var models/champion
