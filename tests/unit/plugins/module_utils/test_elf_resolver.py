"""The resolver on gcc-built fixtures, one loader rule at a time, checked
against the rule itself and, where ld.so can load the file, against ldd."""

from __future__ import annotations

import importlib.util
import os
import signal
from pathlib import Path

import pytest
from doubles import elf_corpus as corpus
from doubles.elf_builders import EM_AARCH64, executable, retarget, shared_lib, symlink_chain
from fuzzseeds import dynamic_entry_offset, ld_so_conf_include_loop, patch, phdr_offset

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import elf as er

# gcc is installed by scripts/setup.sh: a missing gcc must fail these tests, not skip them.


def resolve(path: Path, **kwargs) -> er.Resolution:
    return er.Resolver(**kwargs).resolve(str(path))


def by_name(res: er.Resolution) -> dict[str, dict]:
    return {lib["name"]: lib for lib in res.libraries()}


def assert_same_as_ldd(res: er.Resolution, path: Path, env: dict | None = None) -> None:
    found, missing = corpus.ldd(path, env)
    assert res.real_paths() == found
    assert {m["name"] for m in res.missing} == missing


def test_rpath_is_inherited_by_the_loading_chain(tmp_path):
    leaf = shared_lib(tmp_path / "a" / "libleaf.so", soname="libleaf.so")
    mid = shared_lib(tmp_path / "b" / "libmid.so", soname="libmid.so", needed=[leaf])
    app = executable(tmp_path / "app", needed=[mid], rpath=f"{tmp_path}/b:{tmp_path}/a")
    res = resolve(app)
    libs = by_name(res)
    assert libs["libmid.so"]["found_via"] == "rpath"
    assert libs["libleaf.so"]["path"] == str(leaf)
    assert libs["libleaf.so"]["found_via"] == "rpath"  # the app's RPATH, through libmid's loader chain
    assert libs["libleaf.so"]["needed_by"] == str(mid)
    assert_same_as_ldd(res, app)


def test_runpath_applies_only_to_direct_needs(tmp_path):
    leaf = shared_lib(tmp_path / "a" / "libleaf.so", soname="libleaf.so")
    mid = shared_lib(tmp_path / "b" / "libmid.so", soname="libmid.so", needed=[leaf])
    app = executable(tmp_path / "app", needed=[mid], runpath=f"{tmp_path}/b:{tmp_path}/a")
    res = resolve(app)
    assert by_name(res)["libmid.so"]["found_via"] == "runpath"
    assert [m["name"] for m in res.missing] == ["libleaf.so"]
    assert res.missing[0]["chain"] == ["app", "libmid.so", "libleaf.so"]
    assert_same_as_ldd(res, app)


def test_runpath_disables_the_objects_own_rpath_chain(tmp_path):
    # An object with RUNPATH ignores RPATH, its own and its loaders'.
    leaf = shared_lib(tmp_path / "a" / "libleaf.so", soname="libleaf.so")
    mid = shared_lib(tmp_path / "b" / "libmid.so", soname="libmid.so", needed=[leaf], runpath="/nonexistent")
    app = executable(tmp_path / "app", needed=[mid], rpath=f"{tmp_path}/b:{tmp_path}/a")
    res = resolve(app)
    assert [m["name"] for m in res.missing] == ["libleaf.so"]
    assert_same_as_ldd(res, app)


@pytest.mark.parametrize("token", ["$ORIGIN", "${ORIGIN}"])
def test_origin_is_the_directory_of_the_object(tmp_path, token):
    leaf = shared_lib(tmp_path / "pkg" / "lib" / "libleaf.so", soname="libleaf.so")
    plugin = shared_lib(
        tmp_path / "pkg" / "plugin" / "libplugin.so",
        soname="libplugin.so",
        needed=[leaf],
        runpath=f"{token}/../lib",
    )
    res = resolve(plugin)
    lib = by_name(res)["libleaf.so"]
    assert lib["realpath"] == str(leaf)
    assert lib["found_via"] == "runpath"
    assert_same_as_ldd(res, plugin)


def test_lib_and_platform_tokens(tmp_path):
    r = er.Resolver(lib="lib/x86_64-linux-gnu", platform="x86_64")
    obj = er.ElfObject("/opt/x/libp.so", "/opt/x/libp.so", er.Header(64, "<", 0, 3, 62))
    assert r.expand("$ORIGIN/${LIB}/$PLATFORM", obj) == "/opt/x/lib/x86_64-linux-gnu/x86_64"
    assert r.expand("", obj) == "."  # an empty entry is the current directory


def test_nested_dependencies_are_resolved_breadth_first(tmp_path):
    c = shared_lib(tmp_path / "l" / "libc3.so", soname="libc3.so")
    b = shared_lib(tmp_path / "l" / "libb2.so", soname="libb2.so", needed=[c], runpath="$ORIGIN")
    a = shared_lib(tmp_path / "l" / "liba1.so", soname="liba1.so", needed=[b], runpath="$ORIGIN")
    res = resolve(a)
    libs = by_name(res)
    assert libs["libb2.so"]["depth"] == 1
    assert libs["libc3.so"]["depth"] == 2
    assert_same_as_ldd(res, a)


def test_a_soname_provided_twice_resolves_to_the_first_in_search_order(tmp_path):
    first = shared_lib(tmp_path / "one" / "libdup.so.1", soname="libdup.so.1", symbol="dup_one")
    second = shared_lib(tmp_path / "two" / "libdup.so.1", soname="libdup.so.1", symbol="dup_two")
    # libuser has a RUNPATH to the second copy, but the first is already loaded by then.
    user = shared_lib(
        tmp_path / "u" / "libuser.so", soname="libuser.so", needed=[second], runpath=f"{tmp_path}/two"
    )
    app = executable(tmp_path / "app", needed=[first, user], runpath=f"{tmp_path}/one:{tmp_path}/u")
    res = resolve(app)
    assert by_name(res)["libdup.so.1"]["realpath"] == str(first)
    assert str(second) not in res.real_paths()
    assert_same_as_ldd(res, app)


def test_missing_library_is_reported_with_its_chain(tmp_path):
    mid = shared_lib(tmp_path / "l" / "libmid.so", soname="libmid.so", needed=["-L/nonexistent"])
    src = tmp_path / "gone" / "libgone.so.3"
    shared_lib(src, soname="libgone.so.3")
    needy = shared_lib(
        tmp_path / "l" / "libneedy.so", soname="libneedy.so", needed=[src, mid], runpath="$ORIGIN"
    )
    src.unlink()
    res = resolve(needy)
    assert res.missing == [
        {"name": "libgone.so.3", "needed_by": str(needy), "chain": ["libneedy.so", "libgone.so.3"]}
    ]
    assert_same_as_ldd(res, needy)


def test_wrong_class_and_foreign_machine_candidates_are_skipped(tmp_path):
    good = shared_lib(tmp_path / "good" / "libx.so.1", soname="libx.so.1")
    retarget(good, tmp_path / "wrongclass" / "libx.so.1", elfclass=32)
    retarget(good, tmp_path / "arm" / "libx.so.1", machine=EM_AARCH64)
    app = executable(
        tmp_path / "app", needed=[good], runpath=f"{tmp_path}/wrongclass:{tmp_path}/arm:{tmp_path}/good"
    )
    res = resolve(app)
    assert by_name(res)["libx.so.1"]["realpath"] == str(good)
    reasons = {Path(s["path"]).parent.name: s["reason"] for s in res.skipped}
    assert reasons["wrongclass"].startswith("ELF32")
    assert "aarch64" in reasons["arm"]
    assert_same_as_ldd(res, app)


def test_symlink_chains_report_opened_and_real_paths(tmp_path):
    real = shared_lib(tmp_path / "l" / "libchain.so.1.2.3", soname="libchain.so.1")
    symlink_chain(real, "libchain.so", "libchain.so.1", "libchain.so.1.2")
    app = executable(tmp_path / "app", needed=[tmp_path / "l" / "libchain.so"], runpath=f"{tmp_path}/l")
    res = resolve(app)
    lib = by_name(res)["libchain.so.1"]
    assert lib["path"] == f"{tmp_path}/l/libchain.so.1"
    assert lib["realpath"] == str(real)
    assert_same_as_ldd(res, app)


def test_dependency_cycles_terminate(tmp_path):
    d = tmp_path / "cyc"
    two = shared_lib(d / "libcyc2.so", soname="libcyc2.so")
    one = shared_lib(d / "libcyc1.so", soname="libcyc1.so", needed=[two], runpath="$ORIGIN")
    shared_lib(d / "libcyc2.so", soname="libcyc2.so", needed=[one], runpath="$ORIGIN")
    res = resolve(one)
    names = [e.name for e in res.loaded]
    assert names.count("libcyc2.so") == 1
    assert "libcyc1.so" not in names  # the root is already loaded under its soname
    assert_same_as_ldd(res, one)


def test_ld_library_path_is_the_given_one_not_the_environment(tmp_path, monkeypatch):
    lib = shared_lib(tmp_path / "wasmedge" / "lib" / "libwasmedge.so.0", soname="libwasmedge.so.0")
    plugin = shared_lib(tmp_path / "plugin" / "libp.so", soname="libp.so", needed=[lib])
    monkeypatch.setenv("LD_LIBRARY_PATH", str(lib.parent))
    assert [m["name"] for m in resolve(plugin).missing] == ["libwasmedge.so.0"]
    res = resolve(plugin, ld_library_path=[str(lib.parent)])
    assert by_name(res)["libwasmedge.so.0"]["found_via"] == "ld_library_path"
    assert_same_as_ldd(res, plugin, env=dict(os.environ, LD_LIBRARY_PATH=str(lib.parent)))
    excluded = resolve(plugin, preloaded=["libwasmedge.so.0"])
    assert excluded.missing == []
    assert "libwasmedge.so.0" not in by_name(excluded)


def test_ld_so_conf_includes_are_followed_in_order(tmp_path):
    conf = tmp_path / "etc" / "ld.so.conf"
    (tmp_path / "etc" / "ld.so.conf.d").mkdir(parents=True)
    conf.write_text("# comment\n/opt/first\ninclude ld.so.conf.d/*.conf\n/opt/last:/opt/last2\n")
    (tmp_path / "etc" / "ld.so.conf.d" / "b.conf").write_text("/opt/b\n")
    (tmp_path / "etc" / "ld.so.conf.d" / "a.conf").write_text(
        "/opt/a/ # trailing comment\nhwcap 0 nosegneg\n"
    )
    fs = er.FileSystem(str(tmp_path))
    assert er.parse_ld_so_conf(fs.read_text, fs.glob) == [
        "/opt/first",
        "/opt/a",
        "/opt/b",
        "/opt/last",
        "/opt/last2",
    ]


@pytest.mark.parametrize("chrooted", [True, False], ids=["root", "host-paths"])
def test_an_include_loop_through_directory_links_reads_each_file_once(tmp_path, chrooted, time_limit):
    root = ld_so_conf_include_loop(tmp_path / "r")
    reads = []
    fs = er.FileSystem(str(root) if chrooted else "/")
    top = "/etc/ld.so.conf" if chrooted else str(root / "etc" / "ld.so.conf")
    if not chrooted:
        (root / "etc" / "ld.so.conf").write_text(f"include {root}/etc/ld.so.conf.d/*.conf\n")

    def read(path):
        reads.append(path)
        return fs.read_text(path)

    with time_limit(30):
        assert er.parse_ld_so_conf(read, fs.glob, top, fs.realpath) == ["/opt/a"]
    assert len(reads) == 2  # ld.so.conf and a.conf, once


def test_more_include_files_than_the_limit_fail_naming_the_file(tmp_path):
    confd = tmp_path / "etc" / "ld.so.conf.d"
    confd.mkdir(parents=True)
    (tmp_path / "etc" / "ld.so.conf").write_text("include ld.so.conf.d/*.conf\n")
    for index in range(10):
        (confd / f"{index}.conf").write_text(f"/opt/{index}\n")
    fs = er.FileSystem(str(tmp_path))
    assert len(er.parse_ld_so_conf(fs.read_text, fs.glob, "/etc/ld.so.conf", fs.realpath, limit=11)) == 10
    with pytest.raises(er.ResolverError, match=r"/etc/ld.so.conf includes more than 5 configuration files"):
        er.parse_ld_so_conf(fs.read_text, fs.glob, "/etc/ld.so.conf", fs.realpath, limit=5)


def test_glibc_hwcaps_subdirectories_come_first(tmp_path):
    base = shared_lib(tmp_path / "l" / "libh.so.1", soname="libh.so.1", symbol="base")
    tuned = shared_lib(
        tmp_path / "l" / "glibc-hwcaps" / "x86-64-v3" / "libh.so.1", soname="libh.so.1", symbol="v3"
    )
    app = executable(tmp_path / "app", needed=[base], runpath=f"{tmp_path}/l")
    assert by_name(resolve(app))["libh.so.1"]["realpath"] == str(base)
    res = resolve(app, hwcaps=["x86-64-v4", "x86-64-v3", "x86-64-v2"])
    assert by_name(res)["libh.so.1"]["realpath"] == str(tuned)


def test_root_keeps_absolute_symlinks_inside_the_tree(tmp_path):
    root = tmp_path / "rootfs"
    real = shared_lib(root / "usr" / "lib" / "inside" / "libin.so.1.0", soname="libin.so.1")
    (root / "lib" / "inside").mkdir(parents=True)
    # An absolute link as a rootfs would have it: /lib/inside/libin.so.1 -> /usr/lib/inside/libin.so.1.0
    (root / "lib" / "inside" / "libin.so.1").symlink_to("/usr/lib/inside/libin.so.1.0")
    (root / "etc").mkdir()
    (root / "etc" / "ld.so.conf").write_text("/lib/inside\n")
    shared_lib(root / "opt" / "plugin" / "libp.so", soname="libp.so", needed=[real])
    res = er.Resolver(root=str(root)).resolve("/opt/plugin/libp.so")
    lib = by_name(res)["libin.so.1"]
    assert lib["path"] == "/lib/inside/libin.so.1"
    assert lib["realpath"] == "/usr/lib/inside/libin.so.1.0"
    assert lib["found_via"] == "ld.so.conf"
    # The host's libc is not used: the tree has none.
    assert "libc.so.6" in {m["name"] for m in res.missing}


def test_nodeflib_skips_cache_and_default_directories(tmp_path):
    lib = shared_lib(
        tmp_path / "n" / "libnodef.so", soname="libnodef.so", extra_flags=["-Wl,-z,nodefaultlib"]
    )
    res = resolve(lib)
    assert {m["name"] for m in res.missing} == {"libc.so.6"}
    assert_same_as_ldd(res, lib)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "nope.so", "does not exist"),
        (lambda p: _write(p / "text.so", b"not an elf"), "is not an ELF file"),
        (lambda p: _write(p / "short.so", b"\x7fELF\x02"), "is not an ELF file"),
        (lambda p: p, "is not a regular file"),
    ],
    ids=["missing", "text", "truncated", "directory"],
)
def test_bad_inputs_raise_clear_errors(tmp_path, make, message):
    with pytest.raises(er.ResolverError, match=message):
        er.Resolver().resolve(str(make(tmp_path)))


def test_unreadable_file_is_a_clear_error(tmp_path, monkeypatch):
    lib = shared_lib(tmp_path / "libu.so", soname="libu.so")
    real_open = os.open

    def deny(path, *args, **kwargs):
        if str(path) == str(lib):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(er.ResolverError, match="cannot be read: Permission denied"):
        er.Resolver().resolve(str(lib))


def _cli():
    """scripts/elf_tree.py: the developer CLI over the same resolver (outside module_utils)."""
    path = Path(__file__).resolve().parents[4] / "scripts" / "elf_tree.py"
    spec = importlib.util.spec_from_file_location("elf_tree", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_prints_a_tree(tmp_path, capsys):
    cli = _cli()
    leaf = shared_lib(tmp_path / "lib" / "libleaf.so", soname="libleaf.so")
    plugin = shared_lib(
        tmp_path / "plugin" / "libp.so", soname="libp.so", needed=[leaf], runpath="$ORIGIN/../lib"
    )
    assert cli.main([str(plugin)]) == 0
    out = capsys.readouterr().out
    assert f"libleaf.so => {leaf}  (runpath)" in out
    assert "libc.so.6 => " in out
    assert cli.main([str(tmp_path / "missing.so")]) == 2
    assert "does not exist" in capsys.readouterr().err


# -- damaged files and hostile trees -------------------------------------------------------------
_patch, _dynamic_entry_offset, _phdr_offset = patch, dynamic_entry_offset, phdr_offset


def test_a_needed_string_past_the_end_of_the_file_is_named(tmp_path):
    leaf = shared_lib(tmp_path / "libleaf.so", soname="libleaf.so")
    lib = shared_lib(tmp_path / "libbad.so", soname="libbad.so", needed=[leaf])
    _patch(lib, _dynamic_entry_offset(lib, "DT_NEEDED"), 0x7FFFFFFF)
    with pytest.raises(
        er.ResolverError, match=r"libbad\.so is a damaged ELF file: a DT_NEEDED string points to"
    ):
        er.Resolver().resolve(str(lib))


def test_an_interpreter_past_the_end_of_the_file_is_named(tmp_path):
    program = executable(tmp_path / "prog")
    _patch(program, _phdr_offset(program, "PT_INTERP"), 1 << 40)
    with pytest.raises(
        er.ResolverError, match=r"prog is a damaged ELF file: PT_INTERP points to offset 1099511627776"
    ):
        er.Resolver().resolve(str(program))


class HungError(Exception):  # not an OSError: the resolver must not be able to swallow it
    pass


def _no_hang(seconds: int):
    def alarm(_signum, _frame):
        raise HungError("the resolver blocked on a FIFO")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    return previous


def test_a_fifo_named_like_a_library_is_skipped_not_opened(tmp_path):
    trap = tmp_path / "trap"
    trap.mkdir()
    os.mkfifo(trap / "libc.so.6")  # opening it for reading would block until a writer comes
    lib = shared_lib(tmp_path / "libuser.so", soname="libuser.so")
    previous = _no_hang(5)
    try:
        resolution = er.Resolver(ld_library_path=[str(trap)]).resolve(str(lib))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    libc = next(entry for entry in resolution.libraries() if entry["name"] == "libc.so.6")
    assert not libc["path"].startswith(str(trap))
    with pytest.raises(er.ResolverError, match="is not a regular file"):
        er.Resolver().resolve(str(trap / "libc.so.6"))
