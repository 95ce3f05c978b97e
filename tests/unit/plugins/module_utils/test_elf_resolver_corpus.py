"""Agreement with ldd on real programs and libraries of this machine."""

from __future__ import annotations

import pytest
from doubles import elf_corpus as corpus

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import elf as er

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def files():
    return corpus.build()


@pytest.fixture(scope="module")
def resolver():
    return er.Resolver()


def test_corpus_is_large_enough_and_includes_origin_users(files):
    assert len(files) >= 50, files
    # $ORIGIN users: the JDK on our machines. Listed so the note can say which.
    assert corpus.origin_users(files), "no file with an $ORIGIN RUNPATH/RPATH on this machine"


def test_every_file_resolves_to_the_same_real_paths_as_ldd(files, resolver):
    compared = 0
    disagreements = []
    for path in files:
        expected = corpus.ldd(path)
        if expected is None:
            continue
        found, missing = expected
        res = resolver.resolve(str(path))
        got = res.real_paths()
        got_missing = {m["name"] for m in res.missing}
        if got != found or got_missing != missing:
            disagreements.append((str(path), sorted(got ^ found), sorted(got_missing ^ missing)))
        compared += 1
    assert compared >= 50
    assert disagreements == []
