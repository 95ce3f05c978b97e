#!/usr/bin/env bash
# The local lab (make lab / make lab-destroy): three systemd nodes in podman containers on this
# machine, playbooks/site.yml converged on them from a mirror of STAND-IN release artifacts, ending
# with the verify role's report. The nodes are real Kubernetes nodes: the stand-in k3s launches the
# upstream etcd, kube-apiserver, controller-manager, scheduler, kubelet, kube-proxy and containerd
# (tests/doubles/k3s_launcher.py; scripts/setup.sh builds them from the Go module proxy), the seed's
# backends run as wasm pods through the `wasmedge-nn` runtime class (a stand-in runwasi WasmEdge shim, built on
# runwasi's shim library with wasmtime and llama.cpp, runs the stand-in llama-api-server.wasm in the
# collection's serving image), and the balancer finds them through real EndpointSlices. WasmEdge and
# llama-api-server stand in (tests/doubles/wasmedge_standin, llama_api_server_wasm).
#   scripts/lab.sh create    nodes, then artifacts, then site.yml (inventories/lab/hosts.yml)
#   scripts/lab.sh nodes     the nodes only: containers, network, SSH access (and the inventory of a second lab)
#   scripts/lab.sh artifacts the mirror (stand-in releases, k3s's air-gap images), the models
#   scripts/lab.sh destroy   nodes, network and .cache/lab (mirror, artifact cache, kubeconfig)
#   scripts/lab.sh logs      the k3s journal and the upstream components' logs of every node
# molecule's default scenario is this lab (its create runs `nodes`, its prepare `artifacts`, its converge
# site.yml), under names of its own: its containers and network never touch a developer's lab.
# Ansible reaches the nodes over SSH with pipelining, as it reaches a site's machines (the other molecule
# scenarios tunnel SSH through podman exec): a key pair and the nodes' host keys under .cache/lab/ssh.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

# A second lab beside the first (the test suite's, scripts/test.sh): EDGEWASM_LAB_NAME names its containers
# and network, EDGEWASM_LAB_SUBNET its addresses and EDGEWASM_LAB_DIR its directory; its inventory is then
# written to EDGEWASM_LAB_DIR/inventory (inventories/lab/hosts.yml with those addresses, the same group_vars).
LAB_DIR=${EDGEWASM_LAB_DIR:-$EDGEWASM_CACHE/lab}
NAME=${EDGEWASM_LAB_NAME:-edgewasm-lab}
NETWORK=$NAME
# Fixed addresses: our podman has no DNS plugin, so every node gets the others in /etc/hosts, under
# their inventory names and container names (the k3s role's server address is its ansible_host).
SUBNET=${EDGEWASM_LAB_SUBNET:-10.89.240}
NODES=(server1 agent1 agent2)
declare -A ADDRESS=([server1]=$SUBNET.10 [agent1]=$SUBNET.11 [agent2]=$SUBNET.12)
INVENTORY=$EDGEWASM_REPO/inventories/lab/hosts.yml
# A second k3s release on the mirror, for playbooks/upgrade.yml (-e k3s_version=...; tests/lab does it).
UPGRADE_K3S=v1.32.3+k3s1
IMAGE=localhost/edgewasm-node:bookworm
# Real nodes: kubelet, containerd, kube-proxy and the CNI bridge need a privileged container with its own
# cgroup namespace, and containerd's root on a volume (overlayfs on the image's overlay fails). No bind
# mount of the host's /sys/fs/cgroup/unified (molecule's unprivileged nodes need one for systemd): a
# privileged node's systemd mounts its own, inside its cgroup namespace, so no kubelet ever sees (and
# cleans up) another node's cgroups in the host's hierarchy.
# `--systemd false`, with the tmpfs mounts systemd needs (the image sets `container` and STOPSIGNAL): on this
# cgroup v1 host, podman's systemd mode bind-mounts the host's whole name=systemd hierarchy over the node's,
# so the node's systemd puts its units in the host's root (shared by all nodes) and the node's processes
# read their name=systemd cgroup as `/../../system.slice/...`, outside their namespace. runwasi's shim
# (youki) bind-mounts a container's v1 hierarchies from those paths and fails ("failed to prepare
# rootfs"); runc does not. Without the bind mount each node's units stay under its own cgroup.
# The upstream components (scripts/setup.sh builds them; each build directory is mounted whole, so its
# `current` link follows a rebuild) are mounted read-only where the stand-in k3s looks for them
# (tests/doubles/k3s_launcher.py): with them, `k3s server` / `k3s agent` start the real programs.
REAL_NODE=(--privileged --cgroupns=private --systemd false
  --tmpfs "/run:rw,nosuid,nodev" --tmpfs "/run/lock:rw,nosuid,nodev" --tmpfs "/tmp:rw,nosuid,nodev"
  -v /var/lib/rancher/k3s/agent/containerd
  -v "$EDGEWASM_CACHE/controlplane:/opt/edgewasm-lab/controlplane:ro"
  -v "$EDGEWASM_CACHE/containerd:/opt/edgewasm-lab/containerd:ro")

log() { printf '[lab] %s\n' "$*"; }

nodes() {
  podman network exists "$NETWORK" || podman network create --subnet "$SUBNET.0/24" "$NETWORK" >/dev/null
  local node other hosts=()
  for other in "${NODES[@]}"; do
    hosts+=(--add-host "$other:${ADDRESS[$other]}" --add-host "$NAME-$other:${ADDRESS[$other]}")
  done
  for node in "${NODES[@]}"; do
    if podman container exists "$NAME-$node"; then
      log "node $node: exists"
      continue
    fi
    log "node $node: creating $NAME-$node"
    podman run -d --name "$NAME-$node" --hostname "$node" \
      --network "$NETWORK" --ip "${ADDRESS[$node]}" "${hosts[@]}" \
      --sysctl net.ipv4.ip_forward=1 \
      "${REAL_NODE[@]}" \
      "$IMAGE" /sbin/init >/dev/null
  done
  ssh_access
  if [[ $SUBNET != 10.89.240 ]]; then
    mkdir -p "$LAB_DIR/inventory"
    sed "s/10\.89\.240\./$SUBNET./g" "$EDGEWASM_REPO/inventories/lab/hosts.yml" >"$LAB_DIR/inventory/hosts.yml"
    ln -sfn "$EDGEWASM_REPO/inventories/lab/group_vars" "$LAB_DIR/inventory/group_vars"
  fi
}

artifacts() {
  local images
  log "images: pause, balancer (tests/doubles/lab_images.py)"
  images=$(python3 "$EDGEWASM_REPO/tests/doubles/lab_images.py" --cache "$EDGEWASM_CACHE/lab-images")
  python3 "$EDGEWASM_REPO/tests/doubles/release_mirror.py" --mirror "$LAB_DIR/mirror" \
    --version 0.14.1 --k3s-version v1.31.6+k3s1 --k3s-version "$UPGRADE_K3S" --k3s-images "$images" \
    --llamaedge-version 0.28.1 \
    --wasm-shim "$EDGEWASM_CACHE/wasmedge-standin/current/containerd-shim-wasmedge-v1" >/dev/null
  # The backends' llama-api-server.wasm: the stand-in of tests/doubles/llama_api_server_wasm (no wasi:logging
  # import, as a site's build for runwasi's shim must be), which llama_backends_server_wasm names.
  install -m 0644 "$EDGEWASM_CACHE/wasmedge-standin/current/llama-api-server.wasm" "$LAB_DIR/llama-api-server.wasm"
  python3 "$EDGEWASM_REPO/tests/doubles/lab_models.py" --dir "$LAB_DIR/models" \
    Llama-3.2-1B-Instruct-Q5_K_M.gguf Llama-3.2-3B-Instruct-Q5_K_M.gguf Qwen2.5-1.5B-Instruct-Q5_K_M.gguf
}

create() {
  nodes
  artifacts
  [[ -f $LAB_DIR/inventory/hosts.yml ]] && INVENTORY=$LAB_DIR/inventory/hosts.yml
  EDGEWASM_LAB_DIR=$LAB_DIR ansible-playbook -i "$INVENTORY" "$EDGEWASM_REPO/playbooks/site.yml"
  if [[ -f $LAB_DIR/reports/verify.md ]]; then
    cat "$LAB_DIR/reports/verify.md"
  fi
  log "ready: podman exec -it $NAME-server1 bash; kubeconfig $LAB_DIR/kubeconfig.yaml; inventory $INVENTORY"
}

# The controller's key in every node's authorized_keys, and every node's host key in our known_hosts
# (made on the node's first boot): Ansible then checks host keys strictly.
ssh_access() {
  local node key=$LAB_DIR/ssh/id_ed25519 known=$LAB_DIR/ssh/known_hosts try
  mkdir -p "$LAB_DIR/ssh"
  chmod 0700 "$LAB_DIR/ssh"
  [[ -f $key ]] || ssh-keygen -q -t ed25519 -N '' -C edgewasm-lab -f "$key"
  : >"$known.new"
  for node in "${NODES[@]}"; do
    podman exec -i "$NAME-$node" sh -c 'umask 077; mkdir -p /root/.ssh; cat >/root/.ssh/authorized_keys' <"$key.pub"
    for try in $(seq 60); do
      podman exec "$NAME-$node" systemctl is-active -q ssh && break
      ((try < 60)) || { log "node $node: sshd did not start"; podman exec "$NAME-$node" systemctl status ssh || true; exit 1; }
      sleep 1
    done
    podman exec "$NAME-$node" cat /etc/ssh/ssh_host_ed25519_key.pub \
      | awk -v ip="${ADDRESS[$node]}" '{print ip, $1, $2}' >>"$known.new"
  done
  mv "$known.new" "$known"
}

destroy() {
  local node found=0
  for node in "${NODES[@]}"; do
    podman container exists "$NAME-$node" && found=1
    podman rm -f -v --ignore "$NAME-$node" >/dev/null
  done
  if podman network exists "$NETWORK"; then
    podman network rm "$NETWORK" >/dev/null
    found=1
  fi
  [[ -e $LAB_DIR ]] && found=1
  rm -rf "$LAB_DIR"
  if ((found)); then
    log "removed the nodes, the $NETWORK network and $LAB_DIR"
  else
    log "nothing to remove: no $NAME-* node, no $NETWORK network, no $LAB_DIR"
  fi
}

# What each node's k3s launcher and its upstream programs said last: the journal of the k3s unit and the
# end of every component's log (<data-dir>/agent/logs).
logs() {
  local node
  for node in "${NODES[@]}"; do
    podman container exists "$NAME-$node" || continue
    echo "===== $node: journalctl -u k3s -u k3s-agent (last 40 lines)"
    podman exec "$NAME-$node" journalctl -u k3s -u k3s-agent --no-pager -n 40 || true
    echo "===== $node: component logs (last 25 lines each)"
    podman exec "$NAME-$node" sh -c 'tail -n 25 /var/lib/rancher/k3s/agent/logs/*.log 2>/dev/null' || true
  done
}

case ${1:-} in
  create) create ;;
  nodes) nodes ;;
  artifacts) artifacts ;;
  destroy) destroy ;;
  logs) logs ;;
  *) echo "usage: $0 create|nodes|artifacts|destroy|logs" >&2; exit 2 ;;
esac
