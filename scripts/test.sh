#!/usr/bin/env bash
# Stage functions are called indirectly through stage(): not unreachable.
# shellcheck disable=SC2317
# The project's whole test suite: `make test` runs this. Sets everything up on a
# fresh Debian 12 machine (scripts/setup.sh), then runs each stage in order,
# prints a header per stage, and ends with one line "N passed, N failed". The molecule scenarios start
# in the background right after setup and run beside the other stages.
#
# Stages: setup, ruff, ansible-lint (with yamllint), ansible-test sanity, galaxy (galaxy-importer and
# the docs and changelog linters), pytest (unit and functional), cluster (tests/cluster and the integration
# target against a real Kubernetes control plane), compat (the oldest and the newest
# ansible-core), balancer (its own pytest suite), one stage per molecule scenario (default: the lab, real
# Kubernetes nodes end to end, then tests/lab; lifecycle: the install stories on stand-in nodes). Select stages with
# EDGEWASM_STAGES="ruff pytest" (names as printed in the headers' brackets); setup always runs unless
# excluded by name: EDGEWASM_STAGES="pytest -setup".
# A name that is no stage is an error (exit 2).
set -uo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$EDGEWASM_REPO" || exit 2

passed=0
failed=0
summary=()
# Each stage's output is also kept here, for the failure digest at the end.
stage_logs=$(mktemp -d "${TMPDIR:-/tmp}/edgewasm-stages.XXXXXX")
trap 'rm -rf "$stage_logs"' EXIT

all_stages=(setup ruff ansible-lint sanity galaxy pytest cluster compat balancer)
for scenario_dir in extensions/molecule/*/; do all_stages+=("molecule-$(basename "$scenario_dir")"); done
only=" "
skip=" "
for name in ${EDGEWASM_STAGES:-}; do
  if [[ " ${all_stages[*]} " != *" ${name#-} "* ]]; then
    echo "EDGEWASM_STAGES: unknown stage '${name#-}'; stages: ${all_stages[*]} (prefix one with - to leave it out)" >&2
    exit 2
  fi
  if [[ $name == -* ]]; then skip+="${name#-} "; else only+="$name "; fi
done
# Setup is what every other stage stands on: it runs unless left out by name.
[[ $only != " " ]] && only+="setup "

selected() { [[ "$skip" != *" $1 "* ]] && [[ "$only" == " " || "$only" == *" $1 "* ]]; }

stage() {
  local name=$1 title=$2
  shift 2
  selected "$name" || return 0
  printf '\n======== [%s] %s ========\n' "$name" "$title"
  local start=$SECONDS rc
  "$@" 2>&1 | tee "$stage_logs/$name.log"
  rc=${PIPESTATUS[0]}
  local took=$((SECONDS - start))
  if ((rc == 0)); then
    passed=$((passed + 1)); summary+=("PASS  ${took}s  $name")
  else
    failed=$((failed + 1)); summary+=("FAIL  ${took}s  $name (exit $rc)")
  fi
  printf -- '-------- [%s] %s in %ss --------\n' "$name" "$([[ $rc == 0 ]] && echo passed || echo FAILED)" "$took"
  return "$rc"
}

# What a failed stage said, again at the very end: CI shows only the tail of the output, and the molecule logs
# printed last would otherwise hide which tests failed. pytest's summary lines (FAILED/ERROR), ansible's failed
# tasks and the other tools' error lines; else the stage's last lines.
failure_digest() {
  local name=$1 log=$stage_logs/$1.log lines
  lines=$(grep -aE '^(FAILED|ERROR) |^fatal: |^failed: |^[A-Za-z_./-]+:[0-9]+:[0-9]+: |^ERROR:|^FAIL|failed:? ' "$log" |
    grep -av '^FAIL  [0-9]*s ' | tail -n 40)
  [[ -n $lines ]] || lines=$(tail -n 25 "$log")
  printf '\n-------- what [%s] said of its failure --------\n%s\n' "$name" "$lines"
}

finish() {
  local line name
  for line in "${summary[@]}"; do
    [[ $line == FAIL* ]] || continue
    name=${line#FAIL  *s  }
    failure_digest "${name%% *}"
  done
  printf '\n======== summary ========\n'
  printf '%s\n' "${summary[@]}"
  printf '%s passed, %s failed\n' "$passed" "$failed"
  ((failed == 0))
  exit $?
}

# ansible-test needs the collection under .../ansible_collections/<ns>/<name>/
# as a real directory (it resolves symlinks): test a copy of the tracked and
# untracked-but-not-ignored files, all of them (balancer/ included), as a plain checkout's CI would.
# Outside the work tree: inside it, ansible-test would list files with git and find the copy ignored.
# Prints the top directory of the copy; the collection is at $top/ansible_collections/edgewasm/llamaedge.
collection_copy() {
  local top
  top=$(mktemp -d "${TMPDIR:-/tmp}/edgewasm-$1.XXXXXX")
  mkdir -p "$top/ansible_collections/edgewasm/llamaedge"
  git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -x -C "$top/ansible_collections/edgewasm/llamaedge"
  echo "$top"
}

sanity() {
  local top root rc
  top=$(collection_copy sanity)
  root=$top/ansible_collections/edgewasm/llamaedge
  # Every sanity test runs; all need only PyPI (requirements are installed into
  # ansible-test's own venvs, cached under its HOME inside .cache), none needs a container registry.
  (cd "$root" && HOME=$EDGEWASM_ANSIBLE_TEST_HOME ansible-test sanity --color no --python 3.11 2>&1 |
   grep -v 'is ignored: it is neither'
   exit "${PIPESTATUS[0]}")
  rc=$?
  rm -rf "$top"
  return "$rc"
}

# What Galaxy and the docsite run on a collection (requirements/release-tools.txt, a venv of its own):
# galaxy-importer on the built artifact (any WARNING or ERROR line fails), antsibull-docs' collection
# docs lint (plugin and role docs, references) and antsibull-changelog's lint.
galaxy_stage() {
  local tools=$EDGEWASM_CACHE/venv-release-tools/bin dist rc=0
  dist=$(mktemp -d "${TMPDIR:-/tmp}/edgewasm-galaxy.XXXXXX")
  ansible-galaxy collection build --output-path "$dist" . >/dev/null || rc=1
  if ((rc == 0)); then
    # galaxy-importer runs ansible-lint and ansible-doc from PATH: its own pinned ones.
    (cd "$dist" && PATH=$tools:$PATH "$tools/python" -m galaxy_importer.main ./*.tar.gz) >"$dist/importer.log" 2>&1 || rc=1
    grep -v '^Loading ' "$dist/importer.log"
    if grep -qE '^(WARNING|ERROR)' "$dist/importer.log"; then echo "galaxy-importer: warnings or errors above"; rc=1; fi
  fi
  rm -rf "$dist"
  "$tools/antsibull-docs" lint-collection-docs --plugin-docs --validate-collection-refs all \
    --disallow-unknown-collection-refs . || { echo "antsibull-docs lint-collection-docs failed"; rc=1; }
  "$tools/antsibull-changelog" lint || { echo "antsibull-changelog lint failed"; rc=1; }
  ((rc == 0)) && echo "galaxy-importer, antsibull-docs and antsibull-changelog: clean"
  return "$rc"
}

# The real Kubernetes control plane (tests/controlplane; setup builds it from tools/controlplane): the cluster
# tests, then the llama_modules integration target through ansible-test against a fresh control plane.
cluster_stage() {
  local top rc=0
  python -m pytest -p no:cacheprovider tests/cluster || rc=1
  top=$(collection_copy integration)
  (cd "$top/ansible_collections/edgewasm/llamaedge" &&
   HOME=$EDGEWASM_ANSIBLE_TEST_HOME python "$EDGEWASM_REPO/tests/controlplane" \
     --integration-config tests/integration/integration_config.yml -- \
     ansible-test integration llama_modules --allow-unsupported --local --color no) || rc=1
  rm -rf "$top"
  return "$rc"
}

# With rustfmt on the tests' Rust stand-in (it only formats: the build is setup's).
ruff_stage() {
  ruff check . && ruff format --check . &&
    cargo fmt --check --manifest-path "$EDGEWASM_REPO/tests/doubles/wasmedge_standin/Cargo.toml" &&
    cargo fmt --check --manifest-path "$EDGEWASM_REPO/tests/doubles/llama_api_server_wasm/Cargo.toml"
}

lint_stage() { yamllint --strict . && ansible-lint --offline --profile production; }

pytest_stage() {
  python -m pytest -p no:cacheprovider --durations=25 tests/unit tests/functional
}

# Molecule scenarios run in the background, beside pytest and the balancer suite: much of their time
# is spent waiting on nodes, so on our 2-core machines this takes minutes off the suite. The default
# scenario (the real lab, the longest) runs in one job, the others one after another in a second job
# (lifecycle, k3s_ha and plugin_deps reach their nodes over SSH through podman exec, so together they are
# about half as long as the lab); each log is printed whole, in order, when its stage comes.
molecule_logs=$EDGEWASM_CACHE/molecule-logs
declare -A molecule_jobs=()

run_scenarios() {
  local scenario start rc
  for scenario in "$@"; do
    start=$SECONDS
    molecule test -s "$scenario" >"$molecule_logs/$scenario.log" 2>&1
    rc=$?
    echo "$rc $((SECONDS - start))" >"$molecule_logs/$scenario.rc"
  done
}

start_molecule() {
  local scenario_dir scenario long=() short=()
  for scenario_dir in extensions/molecule/*/; do
    scenario=$(basename "$scenario_dir")
    selected "molecule-$scenario" || continue
    case $scenario in
      default) long+=("$scenario") ;;
      *) short+=("$scenario") ;;
    esac
  done
  # Only a run that starts scenarios owns the logs (another suite may be running them right now).
  ((${#long[@]} + ${#short[@]})) || return 0
  rm -rf "$molecule_logs" && mkdir -p "$molecule_logs"
  if ((${#long[@]})); then run_scenarios "${long[@]}" & molecule_jobs[default]=$!; fi
  if ((${#short[@]})); then
    run_scenarios "${short[@]}" &
    for scenario in "${short[@]}"; do molecule_jobs[$scenario]=$!; done
  fi
}

molecule_stage() {
  local scenario=$1 rc took
  while [[ ! -f $molecule_logs/$scenario.rc ]]; do
    kill -0 "${molecule_jobs[$scenario]}" 2>/dev/null || break
    sleep 2
  done
  cat "$molecule_logs/$scenario.log"
  read -r rc took <"$molecule_logs/$scenario.rc" || { echo "molecule $scenario did not finish"; return 1; }
  echo "($scenario ran for ${took}s, beside the stages before it)"
  return "$rc"
}

# The ansible-core matrix: the oldest meta/runtime.yml claims (2.16) and the newest (2.21, on Python >= 3.12),
# each in a pinned venv of its own made by setup (requirements/ansible-2.*.txt); every other stage runs under the
# main venv's 2.19. Under each: the playbooks' syntax check and the functional tests that run playbooks
# (tests/functional/conftest.py selects them when EDGEWASM_ANSIBLE_PLAYBOOK is set). The two versions run at
# the same time (each with its own pytest temporary directory): most of their time is ansible-playbook
# start-up and waiting, and the suite's 2 cores are far from busy then. Their outputs are printed in order.
# Each playbook test runs under 2.19 in the pytest stage and under one of the two: the playbook tests split in two
# fixed halves by test id (EDGEWASM_COMPAT_SHARE), the oldest core one half, the newest the other. Every role has
# several playbook tests, so both cores still run every role; the syntax checks and the installed-collection lint
# stay whole. Running every test under both took 918 s of the suite's 30-minute budget on 2 cores.
compat_versions=(2.16 2.21)
declare -A compat_share=([2.16]="1/2" [2.21]="0/2")

# ansible-lint --profile production on the installed artifact, with the tools of that ansible-core's venv: what a
# user of that core sees when linting playbooks that use our roles (filters must let Undefined through, say).
lint_installed() {
  local version=$1 bin=$EDGEWASM_CACHE/venv-ansible-$1/bin work rc=0
  work=$(mktemp -d "${TMPDIR:-/tmp}/edgewasm-lint-$version.XXXXXX")
  if ! { "$bin/ansible-galaxy" collection build --output-path "$work/dist" . >/dev/null &&
    "$bin/ansible-galaxy" collection install --force --offline --no-deps -p "$work/collections" "$work"/dist/*.tar.gz \
      >/dev/null 2>&1; }; then
    echo "building or installing the collection with ansible-core $version failed"
    rc=1
  fi
  if ((rc == 0)); then
    (cd "$work/collections/ansible_collections/edgewasm/llamaedge" &&
     ANSIBLE_COLLECTIONS_PATH=$work/collections:$EDGEWASM_COLLECTIONS PATH=$bin:$PATH \
       ansible-lint --offline --profile production 2>&1 | grep -v '^WARNING .*AnsibleWarning'
     exit "${PIPESTATUS[0]}") || { echo "ansible-lint under ansible-core $version failed on the installed collection"; rc=1; }
  fi
  rm -rf "$work"
  return "$rc"
}

compat_version() {
  local version=$1 playbook inventory=inventories/sample/hosts.yml file rc=0
  playbook=$EDGEWASM_CACHE/venv-ansible-$version/bin/ansible-playbook
  "$playbook" --version | head -1
  # The playbooks need an inventory with the groups they name (syntax only: nothing runs).
  for file in playbooks/*.yml; do
    "$playbook" -i "$inventory" --syntax-check "$file" >/dev/null || { echo "syntax check failed: $file"; rc=1; }
  done
  # ansible-lint of the oldest core on the collection as Galaxy delivers it (built, then installed).
  if [[ $version == "${compat_versions[0]}" ]]; then lint_installed "$version" || rc=1; fi
  EDGEWASM_ANSIBLE_PLAYBOOK=$playbook EDGEWASM_COMPAT_SHARE=${compat_share[$version]} \
    python -m pytest -p no:cacheprovider -q --durations=10 \
    --basetemp "$EDGEWASM_CACHE/pytest-compat-$version" tests/functional || rc=1
  # Kept for a look when something failed; else nothing of it stays in .cache.
  ((rc)) || rm -rf "$EDGEWASM_CACHE/pytest-compat-$version"
  return "$rc"
}

compat_stage() {
  local version rc=0 logs
  logs=$(mktemp -d "${TMPDIR:-/tmp}/edgewasm-compat.XXXXXX")
  declare -A jobs=()
  for version in "${compat_versions[@]}"; do
    compat_version "$version" >"$logs/$version.log" 2>&1 &
    jobs[$version]=$!
  done
  for version in "${compat_versions[@]}"; do
    wait "${jobs[$version]}" || rc=1
    cat "$logs/$version.log"
  done
  rm -rf "$logs"
  return "$rc"
}

# The balancer package has its own pytest configuration (balancer/pyproject.toml).
balancer_stage() { (cd balancer && python -m pytest); }

# A stage started in the background (start_beside NAME FUNCTION) and reported later (stage ... beside_stage NAME):
# its output is kept whole and printed when its stage comes, with the time it ran.
declare -A beside_jobs=()

start_beside() {
  local name=$1 function=$2
  selected "$name" || return 0
  {
    local start=$SECONDS rc
    "$function" >"$stage_logs/$name.beside" 2>&1
    rc=$?
    echo "$rc $((SECONDS - start))" >"$stage_logs/$name.beside-rc"
  } &
  beside_jobs[$name]=$!
}

beside_stage() {
  local name=$1 rc took
  wait "${beside_jobs[$name]}"
  cat "$stage_logs/$name.beside"
  read -r rc took <"$stage_logs/$name.beside-rc" || { echo "$name did not finish"; return 1; }
  echo "($name ran for ${took}s, beside compat)"
  return "$rc"
}

stage setup "install packages, venv, collections, node image" "$EDGEWASM_REPO/scripts/setup.sh" || finish
# The molecule scenarios (the lab, default, is one of the suite's critical paths) start right after setup.
start_molecule
stage ruff "ruff check and format, rustfmt" ruff_stage
stage ansible-lint "yamllint and ansible-lint --profile production" lint_stage
stage sanity "ansible-test sanity" sanity
stage galaxy "galaxy-importer, antsibull-docs and antsibull-changelog lint" galaxy_stage
stage pytest "pytest: unit and functional tests" pytest_stage
# cluster and balancer run in the background beside compat: they mostly wait (on the control plane, on
# sockets), and compat's two cores are idle at times; their outputs come in order after compat's.
start_beside cluster cluster_stage
start_beside balancer balancer_stage
stage compat "ansible-core 2.16 (oldest claimed) and 2.21 (newest): syntax check and role tests" compat_stage
stage cluster "the modules and the balancer's discovery against a real control plane" beside_stage cluster
stage balancer "balancer: pytest (real sockets on 127.0.0.1)" beside_stage balancer
for scenario_dir in extensions/molecule/*/; do
  scenario=$(basename "$scenario_dir")
  stage "molecule-$scenario" "molecule test -s $scenario" molecule_stage "$scenario"
done
finish
