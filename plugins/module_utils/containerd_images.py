# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Images in a node's containerd, through its own ``ctr`` (``k3s ctr`` on k3s nodes): what is there, and
the commands that import an OCI archive or remove images.

An image is in place when both of its names point at the expected manifest digest: ``<repository>:<tag>``
(the name in the archive) and ``<repository>@<digest>``, the name a pod that pins the digest resolves to
(containerd's CRI drops the tag of a reference that has both). ``ctr images import --digests`` does not make
that name the same way in ctr 1.6 and 2.x (2.x skips named images), so the import is followed by
``ctr images tag --force``, which both versions run alike.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}\Z")
_REFERENCE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")


def listing(output):
    """{name: target digest} from ``ctr images ls`` (columns REF TYPE DIGEST SIZE PLATFORMS LABELS)."""
    images = {}
    lines = output.splitlines()
    for line in lines[1:] if lines and lines[0].split()[:1] == ["REF"] else lines:
        fields = line.split()
        if len(fields) >= 3 and _DIGEST.match(fields[2]):
            images[fields[0]] = fields[2]
    return images


def repository_of(reference):
    """'repo' of 'repo:tag' (a registry port's colon is kept)."""
    head, _sep, tail = reference.rpartition(":")
    return head if "/" not in tail else reference


def wanted_names(reference, digest):
    return {reference: digest, "%s@%s" % (repository_of(reference), digest): digest}


def settings_errors(reference, digest):
    errors = []
    if not _REFERENCE.match(reference or ""):
        errors.append(
            "reference=%r must be <repository>:<tag>, for example localhost/llamaedge/llama-api-server:0.28.1"
            % reference
        )
    if not _DIGEST.match(digest or ""):
        errors.append(
            "digest=%r must be sha256:<64 hex digits> (the manifest digest wasm_image returns)" % digest
        )
    return errors


def missing(images, reference, digest):
    """Names of this image that are absent or point elsewhere."""
    return sorted(name for name, want in wanted_names(reference, digest).items() if images.get(name) != want)


def stale(images, reference, digest):
    """Other images of the same repository (earlier versions or builds), which prune removes."""
    repository = repository_of(reference)
    keep = wanted_names(reference, digest)
    return sorted(
        name
        for name in images
        if name not in keep and (name.startswith(repository + ":") or name.startswith(repository + "@"))
    )


def plan(images, reference, digest, state, prune):
    """(import?, names to remove) to reach ``state``, from the images containerd has."""
    names = wanted_names(reference, digest)
    remove = set(names) & set(images) if state == "absent" else set()
    if prune:
        remove |= set(stale(images, reference, digest))
    return state == "present" and bool(missing(images, reference, digest)), sorted(remove)


def of_repository(images, reference):
    repository = repository_of(reference)
    return {
        n: d for n, d in images.items() if n.startswith(repository + ":") or n.startswith(repository + "@")
    }


def predicted(images, reference, digest, state, remove):
    """The repository's images after the plan (check mode's diff)."""
    after = {n: d for n, d in of_repository(images, reference).items() if n not in remove}
    if state == "present":
        after.update(wanted_names(reference, digest))
    return after


def base(ctr, address, namespace):
    return [*list(ctr), "--address", address, "--namespace", namespace]


def import_command(ctr, address, namespace, reference, archive):
    """Every platform (the image is wasip1/wasm, not the node's), only names under the repository."""
    return [
        *base(ctr, address, namespace),
        "images",
        "import",
        "--all-platforms",
        "--base-name",
        repository_of(reference),
        archive,
    ]


def tag_command(ctr, address, namespace, reference, digest):
    """The digest name beside the tag (what a pod pinning the digest resolves to)."""
    digest_name = "%s@%s" % (repository_of(reference), digest)
    return [*base(ctr, address, namespace), "images", "tag", "--force", reference, digest_name]


def list_command(ctr, address, namespace):
    return [*base(ctr, address, namespace), "images", "ls"]


def remove_command(ctr, address, namespace, names):
    return [*base(ctr, address, namespace), "images", "rm", *list(names)]


def describe(images):
    """Images as diff text, a line each: '<name> -> <digest>'."""
    return "".join("%s -> %s\n" % (name, images[name]) for name in sorted(images))
