# Shared settings for the project's scripts (sourced, not executed).
# shellcheck shell=bash
EDGEWASM_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
EDGEWASM_CACHE=${EDGEWASM_CACHE:-$EDGEWASM_REPO/.cache}
EDGEWASM_VENV=${EDGEWASM_VENV:-$EDGEWASM_CACHE/venv}
EDGEWASM_COLLECTIONS=$EDGEWASM_CACHE/collections
# The repository seen as an installed collection (ansible-test and
# collection-relative role names need .../ansible_collections/<ns>/<name>/).
EDGEWASM_COLLECTION_ROOT=$EDGEWASM_COLLECTIONS/ansible_collections/edgewasm/llamaedge
# The `ansible` bundle wheel whose collections we install offline.
EDGEWASM_ANSIBLE_BUNDLE=${EDGEWASM_ANSIBLE_BUNDLE:-ansible==12.3.0}
# The HOME ansible-test runs with: it caches its venvs and pip bootstrap under ~/.ansible/test.
EDGEWASM_ANSIBLE_TEST_HOME=$EDGEWASM_CACHE/ansible-test-home
export EDGEWASM_REPO EDGEWASM_CACHE EDGEWASM_VENV EDGEWASM_COLLECTIONS EDGEWASM_COLLECTION_ROOT EDGEWASM_ANSIBLE_TEST_HOME
export ANSIBLE_COLLECTIONS_PATH=$EDGEWASM_COLLECTIONS
export CONTAINERS_CONF=${CONTAINERS_CONF:-$EDGEWASM_REPO/tests/podman/containers.conf}
export PATH=$EDGEWASM_VENV/bin:$PATH
export ANSIBLE_FORCE_COLOR=${ANSIBLE_FORCE_COLOR:-0}
export PY_COLORS=${PY_COLORS:-0}
