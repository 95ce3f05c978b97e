# edgewasm.llamaedge developer entry points.
#   make test        the whole suite (what CI runs): setup, lint, sanity, unit, molecule
#   make lab         create the 3-node podman lab and run playbooks/site.yml on it
#   make lab-destroy remove the lab nodes, their network and .cache/lab
#   make distclean   remove .cache/ and the podman images the suite and the lab made
#   make bench       run the benchmarks (resolver vs ldd/lddtree; balancer vs nginx and direct access;
#                    routing policies under simulated LLM load; a site.yml rerun vs its first converge)
#   make bench-rerun site.yml's first converge and a rerun on fresh lab nodes: times, ratio, slowest tasks
#   make bench-hostile the modules on hostile input (include loops, sparse GGUFs, huge checksum files, endless
#                    bodies): seconds and peak RSS, this tree against the one before the hardening
SHELL := /bin/bash
.DEFAULT_GOAL := help
ENV := source scripts/lib.sh &&

.PHONY: help setup test lint unit sanity lab lab-destroy build changelog clean distclean bench bench-rerun bench-hostile

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

lab: setup
	scripts/lab.sh create

lab-destroy:
	scripts/lab.sh destroy

build: setup
	$(ENV) ansible-galaxy collection build --force --output-path .cache/dist .

changelog: setup
	$(ENV) antsibull-changelog lint && antsibull-changelog generate

clean:
	rm -rf .cache/sanity .cache/dist tests/output

# Everything the suite and the lab made: the caches and the podman images (the lab first; the last one is the
# Linux stand-in server image older checkouts built for the lab).
distclean: lab-destroy clean
	podman rmi -f --ignore localhost/edgewasm-node:bookworm localhost/edgewasm-test-python-standin:bookworm \
		localhost/edgewasm-test-python-rootfs:bookworm localhost/edgewasm-standin-pause:1 \
		localhost/edgewasm-balancer:lab localhost/edgewasm-standin-llama-api-server:lab
	rm -rf .cache

bench: setup
	scripts/setup.sh --bench
	$(ENV) python benchmarks/resolver.py
	$(ENV) python benchmarks/balancer.py
	$(ENV) python benchmarks/llm_routing.py
	$(ENV) python benchmarks/site_rerun.py
	$(ENV) python benchmarks/hostile_inputs.py

bench-hostile: setup
	$(ENV) python benchmarks/hostile_inputs.py

bench-rerun: setup
	$(ENV) python benchmarks/site_rerun.py
