#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: containerd_image
short_description: Import an OCI image archive into a node's containerd once, by digest, and prune older ones
version_added: "0.2.0"
description:
  - Imports the archive (an OCI image layout tar, such as M(edgewasm.llamaedge.wasm_image) writes) with the node's
    own C(ctr), into namespace O(namespace) (V(k8s.io), where the kubelet's images are), only when the image is
    not already there - both C(<repository>:<tag>) and C(<repository>@<digest>) pointing at O(digest). A rerun
    imports nothing.
  - C(<repository>@<digest>) is the name a pod that pins the digest (C(<repository>:<tag>@<digest>)) resolves to
    in containerd's CRI; with C(imagePullPolicy) V(Never) no registry is ever asked.
  - With O(prune=true), removes the other images of the same repository (earlier versions or builds the
    collection imported).
  - On k3s, C(k3s ctr) with k3s's containerd socket (the defaults); the system C(ctr) talks to another containerd.
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: On a node where containerd does not run yet (a check run before k3s is installed) a change is predicted.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: The repository's images and their digests, before and after.
options:
  archive:
    description: The OCI archive on the node; needed when the image has to be imported.
    type: path
  reference:
    description: The image's name in the archive, C(<repository>:<tag>).
    type: str
    required: true
  digest:
    description: Its manifest digest, C(sha256:<hex>).
    type: str
    required: true
  state:
    description: V(present) imports it when missing; V(absent) removes both of its names.
    type: str
    choices: [present, absent]
    default: present
  prune:
    description: Also remove the other images of the repository.
    type: bool
    default: false
  ctr:
    description: The ctr command, as a list.
    type: list
    elements: str
    default: [k3s, ctr]
  address:
    description: containerd's socket.
    type: path
    default: /run/k3s/containerd/containerd.sock
  namespace:
    description: containerd namespace.
    type: str
    default: k8s.io
author:
  - edgewasm.llamaedge maintainers (@edgewasm)
"""

EXAMPLES = r"""
- name: Import the serving image on a node that runs backends
  edgewasm.llamaedge.containerd_image:
    archive: /var/lib/edgewasm/images/llama-api-server-0.28.1.oci.tar
    reference: localhost/llamaedge/llama-api-server:0.28.1
    digest: "{{ server_image.digest }}"
    prune: true
"""

RETURN = r"""
imported:
  description: Whether the archive was imported (or would be, in check mode).
  returned: always
  type: bool
removed:
  description: The image names removed (or that would be).
  returned: always
  type: list
  elements: str
images:
  description: The repository's images after the run, C(name -> digest).
  returned: always
  type: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import containerd_images as ci


def run(module, argv, what):
    rc, out, err = module.run_command(argv)
    if rc != 0:
        module.fail_json(msg="%s failed (rc %d): %s" % (what, rc, (err or out).strip()[-2000:]), cmd=argv)
    return out


def reach(module, p):
    """The ctr command, or the module's end when containerd cannot be reached (a prediction in check mode)."""
    ctr = [module.get_bin_path(p["ctr"][0], required=False) or p["ctr"][0], *p["ctr"][1:]]
    if os.path.isabs(ctr[0]) and os.path.exists(p["address"]):
        return ctr
    if module.check_mode:
        module.exit_json(
            changed=True,
            imported=p["state"] == "present",
            removed=[],
            images={},
            msg="check mode: containerd is not running here yet (%s, %s)" % (ctr[0], p["address"]),
        )
    module.fail_json(
        msg="cannot reach containerd with %s at %s: is k3s installed and running on this node? (ctr, address)"
        % (p["ctr"][0], p["address"])
    )
    return None


def apply(module, p, args, imported, remove):
    """Import and remove as planned; the images afterwards, checked."""
    if imported:
        if not p["archive"] or not os.path.isfile(p["archive"]):
            module.fail_json(
                msg="%s is not in containerd and archive %s is not a file on this node to import it from"
                % (p["reference"], p["archive"])
            )
        command = ci.import_command(*args, reference=p["reference"], archive=p["archive"])
        run(module, command, "importing " + p["archive"])
        names = ci.listing(run(module, ci.list_command(*args), "listing the images"))
        if names.get(p["reference"]) == p["digest"]:
            command = ci.tag_command(*args, reference=p["reference"], digest=p["digest"])
            run(module, command, "naming the image by its digest")
    if remove:
        run(module, ci.remove_command(*args, names=remove), "removing " + ", ".join(remove))
    after = ci.listing(run(module, ci.list_command(*args), "listing the images"))
    still = ci.missing(after, p["reference"], p["digest"]) if p["state"] == "present" else []
    if still:
        module.fail_json(
            msg="after importing %s, containerd has no %s at %s: is the archive the image of that digest?"
            % (p["archive"], ", ".join(still), p["digest"])
        )
    return after


def main():
    module = AnsibleModule(
        argument_spec=dict(
            archive=dict(type="path"),
            reference=dict(type="str", required=True),
            digest=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            prune=dict(type="bool", default=False),
            ctr=dict(type="list", elements="str", default=["k3s", "ctr"]),
            address=dict(type="path", default="/run/k3s/containerd/containerd.sock"),
            namespace=dict(type="str", default="k8s.io"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    errors = ci.settings_errors(p["reference"], p["digest"])
    if not p["ctr"]:
        errors.append("ctr must name the ctr command, for example [k3s, ctr]")
    if errors:
        module.fail_json(msg="; ".join(errors))
    args = (reach(module, p), p["address"], p["namespace"])
    before = ci.listing(run(module, ci.list_command(*args), "listing the images"))
    imported, remove = ci.plan(before, p["reference"], p["digest"], p["state"], p["prune"])
    if module.check_mode:
        after = ci.predicted(before, p["reference"], p["digest"], p["state"], remove)
    elif imported or remove:
        after = apply(module, p, args, imported, remove)
    else:
        after = before
    result = dict(
        changed=imported or bool(remove),
        imported=imported,
        removed=remove,
        images=ci.of_repository(after, p["reference"]),
    )
    if module._diff:
        result["diff"] = {
            "before": ci.describe(ci.of_repository(before, p["reference"])),
            "after": ci.describe(ci.of_repository(after, p["reference"])),
        }
    module.exit_json(**result)


if __name__ == "__main__":
    main()
