# edgewasm.llamaedge developer entry points.
#   make test        the whole suite (what CI runs): setup, lint, sanity, unit, molecule
#   make lab         create the 3-node podman lab and run playbooks/site.yml on it
#   make lab-destroy remove the lab nodes
#   make bench       run the benchmarks (resolver vs ldd/lddtree; balancer vs nginx and direct access)
SHELL := /bin/bash
.DEFAULT_GOAL := help
ENV := source scripts/lib.sh &&

.PHONY: help setup test lint unit sanity lab lab-destroy build changelog clean bench

help:
	@sed -n 's/^#   //p' Makefile

setup:
	scripts/setup.sh

test:
	scripts/test.sh

lint: setup
	EDGEWASM_STAGES="ruff ansible-lint" scripts/test.sh

sanity: setup
	EDGEWASM_STAGES="sanity" scripts/test.sh

unit: setup
	EDGEWASM_STAGES="pytest" scripts/test.sh

LAB_DIR := $(CURDIR)/.cache/lab

lab: setup
	$(ENV) molecule create -s default
	$(ENV) python3 tests/standins/release_mirror.py --mirror $(LAB_DIR)/mirror --version 0.14.1 --k3s-version v1.31.6+k3s1 >/dev/null
	$(ENV) EDGEWASM_LAB_DIR=$(LAB_DIR) ansible-playbook -i inventories/lab/hosts.yml playbooks/site.yml

lab-destroy:
	$(ENV) molecule destroy -s default

build: setup
	$(ENV) ansible-galaxy collection build --force --output-path .cache/dist .

changelog: setup
	$(ENV) antsibull-changelog lint && antsibull-changelog generate

clean:
	rm -rf .cache/sanity .cache/dist tests/output

bench: setup
	scripts/setup.sh --bench
	$(ENV) python benchmarks/resolver.py
	$(ENV) python benchmarks/balancer.py
