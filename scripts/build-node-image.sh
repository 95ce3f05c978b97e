#!/usr/bin/env bash
# Build the Debian bookworm systemd node image used by the molecule scenarios and
# the local lab, and import it into podman as localhost/edgewasm-node:bookworm.
#
# The rootfs comes from debootstrap (Debian's archive only). The tarball is cached
# under $EDGEWASM_CACHE/node-image/ keyed by a hash of this recipe, and the podman
# image carries the same hash as a label: nothing is rebuilt while both match.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
cache=${EDGEWASM_CACHE:-$repo/.cache}
image=${EDGEWASM_NODE_IMAGE:-localhost/edgewasm-node:bookworm}
mirror=${EDGEWASM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
# gcc/make/libc6-dev: the crun_wasmedge role builds the stand-in crun source on a node; python3-apt: the apt module;
# openssh-server: the lab reaches its nodes over SSH, as sites reach theirs (the molecule scenarios use podman exec).
# containerd/runc/containernetworking-plugins/iptables/conntrack/zstd: what a real kubelet node needs beside the
# kubelet (air-gap images are .tar.zst); python3-yaml: the lab's k3s launcher (tests/doubles/k3s.py) reads
# config.yaml with it. The launcher starts containerd itself: the Debian unit is masked.
packages=python3,python3-apt,systemd,systemd-sysv,sudo,iproute2,procps,ca-certificates,dbus,iputils-ping,gnupg,apt-transport-https,gcc,libc6-dev,make,openssh-server,containerd,runc,containernetworking-plugins,iptables,conntrack,zstd,python3-yaml
export CONTAINERS_CONF=${CONTAINERS_CONF:-$repo/tests/podman/containers.conf}

recipe_hash=$( { cat "$0"; echo "$suite $packages"; } | sha256sum | cut -c1-16)
tarball=$cache/node-image/edgewasm-node-$suite-$recipe_hash.tar

log() { printf '[node-image] %s\n' "$*"; }

current_label=$(podman image inspect --format '{{ index .Labels "io.edgewasm.recipe" }}' "$image" 2>/dev/null || true)
if [[ "$current_label" == "$recipe_hash" ]]; then
  log "$image is current (recipe $recipe_hash)"
  exit 0
fi

if [[ ! -s "$tarball" ]]; then
  log "building rootfs with debootstrap ($suite, recipe $recipe_hash)"
  mkdir -p "$(dirname "$tarball")"
  root=$(mktemp -d "$cache/node-image/rootfs.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >"$cache/node-image/debootstrap.log" 2>&1 \
    || { tail -n 30 "$cache/node-image/debootstrap.log"; exit 1; }
  # A container has no consoles, udev or timers worth running; keep boot quiet and fast. containerd runs
  # only where a launcher starts it with its own configuration.
  for unit in getty@.service getty.target console-getty.service systemd-udevd.service \
              systemd-udev-trigger.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
              apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer \
              systemd-remount-fs.service sys-kernel-config.mount containerd.service; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
  done
  # Every container makes its own SSH host keys on its first boot: none are baked into the image.
  rm -f "$root"/etc/ssh/ssh_host_*
  mkdir -p "$root/etc/systemd/system/ssh.service.d"
  printf '[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n' >"$root/etc/systemd/system/ssh.service.d/host-keys.conf"
  : >"$root/etc/machine-id"
  rm -f "$root/var/lib/dbus/machine-id"
  echo "deb $mirror $suite main" >"$root/etc/apt/sources.list"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tmp_tar=$(mktemp "$cache/node-image/.tar.XXXXXX")
  tar --numeric-owner -C "$root" -cf "$tmp_tar" .
  mv "$tmp_tar" "$tarball"
  # drop tarballs of older recipes
  find "$cache/node-image" -maxdepth 1 -name "edgewasm-node-$suite-*.tar" ! -name "$(basename "$tarball")" -delete
else
  log "reusing cached rootfs $tarball"
fi

log "importing $tarball as $image"
podman import \
  --change 'CMD ["/sbin/init"]' \
  --change 'ENV container=podman' \
  --change 'STOPSIGNAL SIGRTMIN+3' \
  --change "LABEL io.edgewasm.recipe=$recipe_hash" \
  "$tarball" "$image" >/dev/null
log "imported $image (recipe $recipe_hash)"
