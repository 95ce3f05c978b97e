#!/usr/bin/env bash
# Install everything the tests and the local lab need on a Debian 12 machine:
# apt packages, the pinned Python venv, the collection dependencies (offline,
# from the `ansible` bundle wheel on PyPI), the collection path, the Kubernetes control plane of the
# cluster tests (built from Go modules), the tests' stand-in wasmedge engine (Rust, from crates.io) and the node image.
# Every step is skipped when its cached result is present and valid.
#   scripts/setup.sh          what `make test` needs
#   scripts/setup.sh --bench  only the benchmarks' reference tools (nginx, wrk)
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

APT_PACKAGES=(podman runc containerd debootstrap pax-utils python3-pyelftools gcc make
              binutils file uidmap shellcheck skopeo
              g++ cmake libclang1-14 libclang-common-14-dev  # llama.cpp and its bindgen
              protobuf-compiler libseccomp-dev pkg-config)   # runwasi's shim library

log() { printf '[setup] %s\n' "$*"; }

# The balancer benchmark compares against nginx and loads with wrk (make bench).
BENCH_PACKAGES=(nginx-light wrk)

apt_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    log "apt: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "apt: all packages present"
  fi
}

python_venv() {
  local stamp want
  want=$(cat "$EDGEWASM_REPO/requirements/test.in" "$EDGEWASM_REPO/requirements/constraints.txt" | sha256sum | cut -c1-16)
  stamp=$EDGEWASM_VENV/.edgewasm-stamp
  if [[ -x $EDGEWASM_VENV/bin/python && -f $stamp && $(cat "$stamp") == "$want" ]]; then
    log "venv: reusing $EDGEWASM_VENV"
    return
  fi
  log "venv: creating $EDGEWASM_VENV"
  rm -rf "$EDGEWASM_VENV"
  python3 -m venv "$EDGEWASM_VENV"
  "$EDGEWASM_VENV/bin/pip" install -q --disable-pip-version-check \
    -r "$EDGEWASM_REPO/requirements/test.in" -c "$EDGEWASM_REPO/requirements/constraints.txt"
  echo "$want" >"$stamp"
}

# A venv of its own from a fully pinned requirements file (installed with --no-deps, so exactly those
# versions): NAME, the requirements file and, optionally, the Python to make it with.
pinned_venv() {
  local venv=$EDGEWASM_CACHE/$1 requirements=$EDGEWASM_REPO/requirements/$2 python=${3:-python3} stamp want
  want=$(printf '%s\n' "$("$python" --version)" "$(cat "$requirements")" | sha256sum | cut -c1-16)
  stamp=$venv/.edgewasm-stamp
  if [[ -x $venv/bin/python && -f $stamp && $(cat "$stamp") == "$want" ]]; then
    log "venv: reusing $venv"
    return
  fi
  log "venv: creating $venv"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -r "$requirements"
  echo "$want" >"$stamp"
}

# A Python >= 3.12 for the newest ansible-core (Debian 12's is 3.11): on PATH, or one pyenv installed.
newer_python() {
  local candidate
  for candidate in python3.13 python3.12 "$(pyenv root 2>/dev/null)"/versions/3.1[2-9]*/bin/python3; do
    if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
      command -v "$candidate"
      return
    fi
  done
  echo "ansible-core 2.21 (the newest, tested by the compat stage) needs Python >= 3.12; none found on PATH" \
    "or under pyenv: install one (e.g. pyenv install 3.12)" >&2
  return 1
}

collections() {
  local stamp=$EDGEWASM_COLLECTIONS/.edgewasm-stamp want
  want=$(printf '%s\n' "$EDGEWASM_ANSIBLE_BUNDLE"; cat "$EDGEWASM_REPO/collections/requirements.yml" "$EDGEWASM_REPO/scripts/install-collections.py")
  want=$(sha256sum <<<"$want" | cut -c1-16)
  if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
    log "collections: reusing $EDGEWASM_COLLECTIONS"
  else
    log "collections: extracting from $EDGEWASM_ANSIBLE_BUNDLE"
    local dl
    dl=$(mktemp -d)
    "$EDGEWASM_VENV/bin/pip" download -q --no-deps --disable-pip-version-check -d "$dl" "$EDGEWASM_ANSIBLE_BUNDLE"
    rm -rf "$EDGEWASM_COLLECTIONS"
    "$EDGEWASM_VENV/bin/python" "$EDGEWASM_REPO/scripts/install-collections.py" \
      --wheel "$dl"/ansible-*.whl --requirements "$EDGEWASM_REPO/collections/requirements.yml" \
      --dest "$EDGEWASM_COLLECTIONS"
    rm -rf "$dl"
    echo "$want" >"$stamp"
  fi
  mkdir -p "$(dirname "$EDGEWASM_COLLECTION_ROOT")"
  ln -sfn "$EDGEWASM_REPO" "$EDGEWASM_COLLECTION_ROOT"
}

# ansible-test bootstraps pip into each sanity venv with a get-pip.py script it
# downloads from a host we cannot reach. Provide our own bootstrap script at the
# path ansible-test caches it under: it installs pip from the pip wheel on PyPI.
# ansible-test keeps that cache and its venvs under ~/.ansible/test; the suite runs it with
# HOME=$EDGEWASM_ANSIBLE_TEST_HOME (lib.sh), inside this checkout's .cache, so two checkouts on one
# machine never share (or break) each other's bootstrap.
ansible_test_pip_bootstrap() {
  local version script wheel_dir
  version=$(grep -oP "pip='\K[0-9.]+" "$EDGEWASM_VENV"/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py | head -n1)
  script=$EDGEWASM_ANSIBLE_TEST_HOME/.ansible/test/cache/get_pip_${version//./_}.py
  wheel_dir=$EDGEWASM_CACHE/pip-bootstrap
  if [[ -f $script ]] && grep -q 'edgewasm offline pip bootstrap' "$script" && compgen -G "$wheel_dir/pip-$version-*.whl" >/dev/null; then
    log "ansible-test: pip $version bootstrap present"
    return
  fi
  log "ansible-test: providing the pip $version bootstrap from PyPI"
  mkdir -p "$wheel_dir" "$(dirname "$script")"
  "$EDGEWASM_VENV/bin/pip" download -q --no-deps --disable-pip-version-check -d "$wheel_dir" "pip==$version"
  cat >"$script" <<PY
# edgewasm offline pip bootstrap: stands in for get-pip.py, which ansible-test
# downloads from a host our machines cannot reach. Installs pip from a wheel.
import glob
import sys

wheel = glob.glob("$wheel_dir/pip-$version-*.whl")[0]
sys.path.insert(0, wheel)
from pip._internal.cli.main import main  # noqa: E402

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(main(["install", "--no-index", "--find-links", "$wheel_dir"] + args))
PY
}

if [[ ${1:-} == --bench ]]; then
  apt_packages "${BENCH_PACKAGES[@]}"
  exit 0
fi
# go_tool NAME: build tools/NAME (a Go module of ours that pins upstream modules; its README says what it
# builds) into .cache/NAME/<key>/ with build_NAME, once per pin set: every Go file of tools/NAME, its go.sum
# and the Go version make the key; the module and build caches live in .cache/go, so a rebuild is offline.
go_tool() {
  local name=$1 src=$EDGEWASM_REPO/tools/$1 dir=$EDGEWASM_CACHE/$1 key started
  if ! command -v go >/dev/null; then
    log "$name: no go on PATH: install the Go that tools/$name/go.mod names (or later)"
    return 1
  fi
  key=$({ go version; cat "$src/go.mod" "$src/go.sum" "$src"/*.go; } | sha256sum | cut -c1-16)
  if [[ -d $dir/$key ]]; then
    log "$name: reusing $dir/$key"
  else
    started=$SECONDS
    rm -rf "$dir/$key.partial"
    mkdir -p "$dir/$key.partial"
    (
      cd "$src"
      export GOMODCACHE=$EDGEWASM_CACHE/go/mod GOCACHE=$EDGEWASM_CACHE/go/build GOTOOLCHAIN=local CGO_ENABLED=0
      export GOFLAGS="-modcacherw -mod=readonly -buildvcs=false"
      go mod download  # quietly (go build would list every module it downloads)
      "build_$name" "$dir/$key.partial"
    )
    mv -T "$dir/$key.partial" "$dir/$key"
    log "$name: built in $((SECONDS - started)) s ($(du -sh "$dir/$key" | cut -f1))"
  fi
  ln -sfn "$key" "$dir/current"
  find "$dir" -mindepth 1 -maxdepth 1 ! -name "$key" ! -name current -exec rm -rf {} +
}

# The real Kubernetes components of the cluster tests (tests/controlplane) and the lab's nodes: etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet and kube-proxy from their
# published Go modules (tools/controlplane/go.mod), as one multi-call binary.
build_controlplane() {
  local out=$1 version stamp component
  version=$(awk '$1 == "k8s.io/kubernetes" { print $2 }' go.mod)
  log "controlplane: building Kubernetes $version components and etcd from the Go module proxy (cold: about 8 minutes)"
  stamp="-X k8s.io/component-base/version.gitVersion=$version -X k8s.io/client-go/pkg/version.gitVersion=$version"
  stamp+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMajor=1"
  stamp+=" -X k8s.io/component-base/version.gitMinor=$(cut -d. -f2 <<<"$version")"
  stamp+=" -X k8s.io/client-go/pkg/version.gitMinor=$(cut -d. -f2 <<<"$version")"
  go build -trimpath -ldflags "-s -w $stamp" -o "$out/controlplane" .
  for component in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do
    ln -s controlplane "$out/$component"
  done
}

# containerd 2, its runc shim and ctr for the lab's nodes that render containerd config version 3
# (tools/containerd/README.md): the upstream commands, built straight from the pinned module.
build_containerd() {
  local out=$1 version module=github.com/containerd/containerd/v2
  version=$(awk -v m="$module" '$1 == m || $2 == m { print $NF }' go.mod | head -n1)
  log "containerd: building containerd $version from the Go module proxy (cold: about 3 minutes)"
  go build -tags "no_btrfs no_devmapper no_zfs" -trimpath \
    -ldflags "-s -w -X $module/version.Version=$version" \
    -o "$out/" "$module/cmd/containerd" "$module/cmd/containerd-shim-runc-v2" "$module/cmd/ctr"
}

# The tests' stand-in WasmEdge (tests/doubles/wasmedge_standin, Rust: the wasmedge CLI and runwasi's WasmEdge
# shim, on wasmtime, llama.cpp and runwasi's containerd-shim-wasm) and stand-in llama-api-server.wasm
# (tests/doubles/llama_api_server_wasm, wasm32-wasip1, on wasmedge-wasi-nn and wasmedge_wasi_socket), from
# crates.io, pinned in their Cargo.lock files, into .cache/wasmedge-standin/<key>/, once per pin set: their
# sources, Cargo.lock files and the Rust toolchain make the key. Cargo's downloads and build trees live in
# .cache/cargo, so a rebuild is offline and incremental. The wasm32-wasip1 standard library comes from rustup.
wasmedge_standin() {
  local engine=$EDGEWASM_REPO/tests/doubles/wasmedge_standin guest=$EDGEWASM_REPO/tests/doubles/llama_api_server_wasm
  local dir=$EDGEWASM_CACHE/wasmedge-standin key started src
  if ! command -v cargo >/dev/null; then
    log "wasmedge-standin: no cargo on PATH: install Rust (rustup) $(awk -F'"' '/^rust-version/ { print $2 }' "$engine/Cargo.toml")"
    return 1
  fi
  key=$(
    rustc -V
    cargo -V
    for src in "$engine" "$guest"; do
      cat "$src/Cargo.toml" "$src/Cargo.lock" "$src"/src/*.rs
    done
    cat "$engine/build.rs" "$engine"/src/bin/*.rs
  )
  key=$(sha256sum <<<"$key" | cut -c1-16)
  if [[ -x $dir/$key/wasmedge-standin && -x $dir/$key/containerd-shim-wasmedge-v1 && -f $dir/$key/llama-api-server.wasm ]]; then
    log "wasmedge-standin: reusing $dir/$key"
  else
    started=$SECONDS
    log "wasmedge-standin: building the stand-in wasmedge CLI, shim and llama-api-server.wasm from crates.io (cold: about 11 minutes)"
    if ! rustup target list --installed | grep -qx wasm32-wasip1; then
      log "wasmedge-standin: adding Rust's wasm32-wasip1 target (rustup)"
      rustup target add wasm32-wasip1 >/dev/null
    fi
    rm -rf "$dir/$key.partial"
    mkdir -p "$dir/$key.partial"
    local -x CARGO_HOME=$EDGEWASM_CACHE/cargo/home
    CARGO_TARGET_DIR=$EDGEWASM_CACHE/cargo/target cargo build --quiet --release --locked --manifest-path "$engine/Cargo.toml"
    CARGO_TARGET_DIR=$EDGEWASM_CACHE/cargo/target-wasm cargo build --quiet --release --locked \
      --target wasm32-wasip1 --manifest-path "$guest/Cargo.toml"
    cp "$EDGEWASM_CACHE/cargo/target/release/"{wasmedge-standin,containerd-shim-wasmedge-v1} "$dir/$key.partial/"
    cp "$EDGEWASM_CACHE/cargo/target-wasm/wasm32-wasip1/release/llama-api-server.wasm" "$dir/$key.partial/"
    mv -T "$dir/$key.partial" "$dir/$key"
    log "wasmedge-standin: built in $((SECONDS - started)) s (build cache $(du -shL "$EDGEWASM_CACHE/cargo" | cut -f1))"
  fi
  ln -sfn "$key" "$dir/current"
  find "$dir" -mindepth 1 -maxdepth 1 ! -name "$key" ! -name current -exec rm -rf {} +
}

apt_packages "${APT_PACKAGES[@]}"
python_venv
pinned_venv venv-ansible-2.16 ansible-2.16.txt
newer=$(newer_python) || exit 1
pinned_venv venv-ansible-2.21 ansible-2.21.txt "$newer"
pinned_venv venv-release-tools release-tools.txt
ansible_test_pip_bootstrap
collections
go_tool controlplane
go_tool containerd
wasmedge_standin
"$EDGEWASM_REPO/scripts/build-node-image.sh"
log "ready"
