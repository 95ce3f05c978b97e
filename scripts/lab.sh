#!/usr/bin/env bash
# The local lab (make lab / make lab-destroy): three systemd nodes in podman containers on this
# machine, playbooks/site.yml converged on them from a mirror of STAND-IN release artifacts.
#   scripts/lab.sh create    nodes, mirror, then site.yml (inventories/lab/hosts.yml)
#   scripts/lab.sh destroy   nodes, network and .cache/lab (mirror, artifact cache, kubeconfig)
# Its containers (edgewasm-lab-*) and network (edgewasm-lab) are its own: the molecule scenarios
# use other names, so running the tests never touches a running lab. The node settings are the ones
# extensions/molecule/default/molecule.yml gives its nodes (image, systemd, cgroup mount, ip_forward).
# Ansible reaches the nodes over SSH with pipelining, as it reaches a site's machines (molecule uses
# podman exec, four podman calls per task): a key pair and the nodes' host keys under .cache/lab/ssh.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

LAB_DIR=$EDGEWASM_CACHE/lab
NETWORK=edgewasm-lab
# Fixed addresses: our podman has no DNS plugin, so every node gets the others in /etc/hosts, under
# their inventory names and container names (the k3s role's server address is its ansible_host).
SUBNET=10.89.240
NODES=(server1 agent1 agent2)
declare -A ADDRESS=([server1]=$SUBNET.10 [agent1]=$SUBNET.11 [agent2]=$SUBNET.12)
IMAGE=localhost/edgewasm-node:bookworm
# Real nodes: kubelet, containerd, kube-proxy and the CNI bridge need a privileged container with its own
# cgroup namespace, and containerd's root on a volume (overlayfs on the image's overlay fails). The
# upstream components (scripts/setup.sh builds them; each build directory is mounted whole, so its
# `current` link follows a rebuild) are mounted read-only where the stand-in k3s looks for them
# (tests/doubles/k3s_launcher.py): with them, `k3s server` / `k3s agent` start the real programs.
REAL_NODE=(--privileged --cgroupns=private
  -v /var/lib/rancher/k3s/agent/containerd
  -v "$EDGEWASM_CACHE/controlplane:/opt/edgewasm-lab/controlplane:ro"
  -v "$EDGEWASM_CACHE/containerd:/opt/edgewasm-lab/containerd:ro")

log() { printf '[lab] %s\n' "$*"; }

create() {
  podman network exists "$NETWORK" || podman network create --subnet "$SUBNET.0/24" "$NETWORK" >/dev/null
  local node other hosts=()
  for other in "${NODES[@]}"; do
    hosts+=(--add-host "$other:${ADDRESS[$other]}" --add-host "edgewasm-lab-$other:${ADDRESS[$other]}")
  done
  for node in "${NODES[@]}"; do
    if podman container exists "edgewasm-lab-$node"; then
      log "node $node: exists"
      continue
    fi
    log "node $node: creating edgewasm-lab-$node"
    podman run -d --name "edgewasm-lab-$node" --hostname "$node" \
      --network "$NETWORK" --ip "${ADDRESS[$node]}" "${hosts[@]}" \
      --systemd always --sysctl net.ipv4.ip_forward=1 \
      "${REAL_NODE[@]}" \
      -v /sys/fs/cgroup/unified:/sys/fs/cgroup/unified:rw \
      "$IMAGE" /sbin/init >/dev/null
  done
  ssh_access
  local images
  log "images: pause, balancer, stand-in llama-api-server (tests/doubles/lab_images.py)"
  images=$(python3 "$EDGEWASM_REPO/tests/doubles/lab_images.py" --cache "$EDGEWASM_CACHE/lab-images")
  python3 "$EDGEWASM_REPO/tests/doubles/release_mirror.py" --mirror "$LAB_DIR/mirror" \
    --version 0.14.1 --k3s-version v1.31.6+k3s1 --k3s-images "$images" \
    --wasm-shim "$EDGEWASM_CACHE/containerd/current/containerd-shim-runc-v2" >/dev/null
  python3 "$EDGEWASM_REPO/tests/doubles/lab_models.py" --dir "$LAB_DIR/models" \
    Llama-3.2-1B-Instruct-Q5_K_M.gguf Llama-3.2-3B-Instruct-Q5_K_M.gguf Qwen2.5-1.5B-Instruct-Q5_K_M.gguf
  EDGEWASM_LAB_DIR=$LAB_DIR ansible-playbook -i "$EDGEWASM_REPO/inventories/lab/hosts.yml" \
    "$EDGEWASM_REPO/playbooks/site.yml"
  if [[ -f $LAB_DIR/reports/verify.md ]]; then
    cat "$LAB_DIR/reports/verify.md"
  fi
  log "ready: podman exec -it edgewasm-lab-server1 bash; kubeconfig $LAB_DIR/kubeconfig.yaml"
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
    podman exec -i "edgewasm-lab-$node" sh -c 'umask 077; mkdir -p /root/.ssh; cat >/root/.ssh/authorized_keys' <"$key.pub"
    for try in $(seq 60); do
      podman exec "edgewasm-lab-$node" systemctl is-active -q ssh && break
      ((try < 60)) || { log "node $node: sshd did not start"; podman exec "edgewasm-lab-$node" systemctl status ssh || true; exit 1; }
      sleep 1
    done
    podman exec "edgewasm-lab-$node" cat /etc/ssh/ssh_host_ed25519_key.pub \
      | awk -v ip="${ADDRESS[$node]}" '{print ip, $1, $2}' >>"$known.new"
  done
  mv "$known.new" "$known"
}

destroy() {
  local node
  for node in "${NODES[@]}"; do
    podman rm -f -v --ignore "edgewasm-lab-$node" >/dev/null
  done
  podman network exists "$NETWORK" && podman network rm "$NETWORK" >/dev/null
  rm -rf "$LAB_DIR"
  log "removed the nodes, the $NETWORK network and $LAB_DIR"
}

case ${1:-} in
  create) create ;;
  destroy) destroy ;;
  *) echo "usage: $0 create|destroy" >&2; exit 2 ;;
esac
