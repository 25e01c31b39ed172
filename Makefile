# Thin wrappers; the work is in scripts/ and bridge-dev. Every cargo call
# covers the workspace (matrix-bridge and tools/bridge-dev) with the debug
# profile and the default target dir (target/), so nothing builds twice.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help dev test lint fmt build up down reset status bench

help:
	@echo "make dev     start the local stack, run scripts/demo, stop on Ctrl-C"
	@echo "make test    fmt check, clippy, build, stack up, cargo test, cfn-lint (= .ci/run)"
	@echo "make lint    cargo fmt --check and clippy"
	@echo "make fmt     cargo fmt"
	@echo "make build   cargo build --workspace --all-targets"
	@echo "make bench   release build; cold starts and warm calls of every function vs a hello-world -> bench/RESULTS.md"
	@echo "make up | down | reset | status   the local stack (scripts/stack)"

dev:
	scripts/stack dev

test:
	scripts/test

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

fmt:
	cargo fmt --all

# Not part of make test: it measures, it does not pass or fail.
bench:
	scripts/bench

build:
	cargo build --workspace --all-targets --locked

up:
	scripts/stack up

down:
	scripts/stack down

reset:
	scripts/stack reset

status:
	scripts/stack status
