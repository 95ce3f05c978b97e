"""node_files: one call converges directories, files and links; check mode, diff, secrets, conflicts."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from ansible_collections.edgewasm.llamaedge.plugins.module_utils import node_files as node_files_utils
from ansible_collections.edgewasm.llamaedge.plugins.modules import node_files


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _layout(root: Path, token: str = "s3cret-token") -> list[dict]:  # noqa: S107 - a test value
    return [
        {"path": str(root / "etc/k3s"), "state": "directory", "mode": "0700"},
        {"path": str(root / "etc/k3s/config.yaml"), "content": "node-name: a\n", "mode": "0600"},
        {"path": str(root / "etc/k3s/k3s.env"), "secret_content": f"K3S_TOKEN={token}\n", "mode": "0600"},
        {"path": str(root / "bin/kubectl"), "state": "link", "src": "k3s", "on_other": "keep"},
    ]


def test_creates_then_rerun_is_unchanged(run_module, tmp_path):
    result = run_module(node_files.main, {"files": _layout(tmp_path)})
    assert result["changed"] is True, result
    assert [item["result"] for item in result["files"]] == ["created"] * 4
    assert _mode(tmp_path / "etc/k3s") == 0o700
    assert (tmp_path / "etc/k3s/config.yaml").read_text() == "node-name: a\n"
    assert _mode(tmp_path / "etc/k3s/config.yaml") == 0o600
    assert _mode(tmp_path / "etc/k3s/k3s.env") == 0o600
    assert os.readlink(tmp_path / "bin/kubectl") == "k3s"
    assert _mode(tmp_path / "bin") == 0o755  # a missing parent of a link: 0755, not the entry's mode

    again = run_module(node_files.main, {"files": _layout(tmp_path)})
    assert again["changed"] is False, again
    assert again["changed_paths"] == []
    assert [item["result"] for item in again["files"]] == ["unchanged"] * 4
    assert list((tmp_path / "etc/k3s").iterdir()) and not [
        p for p in (tmp_path / "etc/k3s").iterdir() if p.name.startswith(".")
    ]  # no temporary file left behind


def test_check_mode_on_a_fresh_node_changes_nothing(run_module, tmp_path):
    result = run_module(node_files.main, {"files": _layout(tmp_path)}, check_mode=True, diff=True)
    assert result["changed"] is True
    assert len(result["changed_paths"]) == 4
    assert list(tmp_path.iterdir()) == []
    states = [(d["before"], d["after"]) for d in result["diff"] if isinstance(d["after"], dict)]
    assert (
        {"path": str(tmp_path / "etc/k3s"), "state": "absent"},
        {"path": str(tmp_path / "etc/k3s"), "state": "directory"},
    ) in states


def test_secret_content_never_in_the_result_or_diff(run_module, tmp_path):
    run_module(node_files.main, {"files": _layout(tmp_path, token="first-token")})
    result = run_module(node_files.main, {"files": _layout(tmp_path, token="second-token")}, diff=True)
    assert result["changed_paths"] == [str(tmp_path / "etc/k3s/k3s.env")]
    text = repr(result)
    assert "first-token" not in text and "second-token" not in text
    assert (tmp_path / "etc/k3s/k3s.env").read_text() == "K3S_TOKEN=second-token\n"
    (secret_diff,) = [d for d in result["diff"] if d.get("after_header", "").endswith("k3s.env")]
    assert secret_diff["after"] == "(secret content not shown)\n"


def test_content_diff_and_attribute_drift(run_module, tmp_path):
    files = _layout(tmp_path)
    files[1]["mode"] = "0644"
    run_module(node_files.main, {"files": files})
    config = tmp_path / "etc/k3s/config.yaml"
    config.chmod(0o600)
    files[1]["content"] = "node-name: b\n"
    result = run_module(node_files.main, {"files": files}, diff=True)
    assert result["changed_paths"] == [str(config)]
    assert result["files"][1]["result"] == "updated"
    assert _mode(config) == 0o644
    (content,) = [d for d in result["diff"] if d.get("after_header") == str(config)]
    # The old file was 0600: its content is not shown, even though the new one is readable by everyone.
    assert (content["before"], content["after"]) == ((node_files_utils.PRIVATE_DIFF,) * 2)

    files[1]["content"] = "node-name: c\n"
    result = run_module(node_files.main, {"files": files}, diff=True)
    (content,) = [d for d in result["diff"] if d.get("after_header") == str(config)]
    assert (content["before"], content["after"]) == ("node-name: b\n", "node-name: c\n")

    config.chmod(0o600)  # only the mode drifts: fixed, reported as an attribute diff
    result = run_module(node_files.main, {"files": files}, diff=True)
    assert result["files"][1]["result"] == "updated"
    assert config.read_text() == "node-name: c\n"
    assert _mode(config) == 0o644
    assert any(d["before"].get("mode") == "0600" for d in result["diff"] if isinstance(d["before"], dict))


def test_a_file_only_some_may_read_is_never_diffed(run_module, tmp_path):
    """k3s writes config.yaml 0600 with plain content: a token in k3s_server_config_extra showed in --diff."""
    config = tmp_path / "config.yaml"
    entry = {"path": str(config), "content": "token: first-s3cret\n", "mode": "0600"}
    created = run_module(node_files.main, {"files": [entry]}, diff=True)
    assert "first-s3cret" not in repr(created["diff"])
    entry["content"] = "token: second-s3cret\n"
    updated = run_module(node_files.main, {"files": [entry]}, diff=True, check_mode=True)
    assert "s3cret" not in repr(updated["diff"])
    (content,) = [d for d in updated["diff"] if d.get("after_header") == str(config)]
    assert content["after"] == node_files_utils.PRIVATE_DIFF
    # An unset mode keeps the old file's (0600): still not shown.
    del entry["mode"]
    kept = run_module(node_files.main, {"files": [entry]}, diff=True)
    assert "s3cret" not in repr(kept["diff"]) and _mode(config) == 0o600


def test_a_new_secret_file_without_a_mode_is_0600(run_module, tmp_path):
    path = tmp_path / "token.env"
    run_module(node_files.main, {"files": [{"path": str(path), "secret_content": "T=1\n"}]})
    assert _mode(path) == 0o600
    plain = tmp_path / "plain.env"
    run_module(node_files.main, {"files": [{"path": str(plain), "content": "A=1\n"}]})
    assert _mode(plain) == 0o644


@pytest.mark.parametrize("state", ["file", "directory", "link"])
def test_a_path_under_a_regular_file_is_named_not_a_traceback(run_module, tmp_path, state):
    """Before: 'Module failed: [Errno 20] Not a directory'."""
    blocker = tmp_path / "etc"
    blocker.write_text("a file where a directory belongs\n")
    target = blocker / "rancher" / "k3s" / "config.yaml"
    entry = {"path": str(target), "state": state}
    entry.update({"file": {"content": "x\n"}, "directory": {}, "link": {"src": "elsewhere"}}[state])
    result = run_module(node_files.main, {"files": [entry]})
    assert result["failed"] is True
    assert result["msg"] == (
        f"{target} cannot be created: {blocker} is a file, not a directory: move it away, or change this path "
        "(nothing was changed)"
    )
    absent = run_module(node_files.main, {"files": [{"path": str(target), "state": "absent"}]})
    assert absent["changed"] is False


def test_a_new_version_keeps_an_unset_mode(run_module, tmp_path):
    path = tmp_path / "wasmedge.env"
    path.write_text("A=1\n")
    path.chmod(0o640)
    result = run_module(node_files.main, {"files": [{"path": str(path), "content": "A=2\n"}]})
    assert result["changed"] is True
    assert _mode(path) == 0o640 and path.read_text() == "A=2\n"


def test_links_keep_replace_and_fail(run_module, tmp_path):
    (tmp_path / "kubectl").write_text("another kubectl\n")
    (tmp_path / "crictl").write_text("old\n")
    (tmp_path / "ctr").symlink_to("elsewhere")
    files = [
        {"path": str(tmp_path / "kubectl"), "state": "link", "src": "k3s", "on_other": "keep"},
        {"path": str(tmp_path / "crictl"), "state": "link", "src": "k3s", "on_other": "replace"},
        {"path": str(tmp_path / "ctr"), "state": "link", "src": "k3s"},
    ]
    result = run_module(node_files.main, {"files": files}, diff=True)
    assert [item["result"] for item in result["files"]] == ["kept", "updated", "updated"]
    assert (tmp_path / "kubectl").read_text() == "another kubectl\n"
    assert os.readlink(tmp_path / "crictl") == "k3s" and os.readlink(tmp_path / "ctr") == "k3s"
    assert {"path": str(tmp_path / "ctr"), "state": "link to elsewhere"} in [
        d["before"] for d in result["diff"]
    ]
    assert result["changed_paths"] == [str(tmp_path / "crictl"), str(tmp_path / "ctr")]


def test_a_conflict_fails_before_anything_is_touched(run_module, tmp_path):
    (tmp_path / "k3s").mkdir()  # a directory where a link belongs: never replaced
    (tmp_path / "config.yaml").mkdir()  # a directory where a file belongs
    files = [
        {"path": str(tmp_path / "new-dir"), "state": "directory"},
        {"path": str(tmp_path / "k3s"), "state": "link", "src": "/usr/local/bin/k3s", "on_other": "replace"},
        {"path": str(tmp_path / "config.yaml"), "content": "x\n"},
    ]
    result = run_module(node_files.main, {"files": files})
    assert result.get("failed") is True
    assert f"{tmp_path}/k3s is a directory where a link to /usr/local/bin/k3s belongs" in result["msg"]
    assert f"{tmp_path}/config.yaml is a directory, not a regular file" in result["msg"]
    assert "nothing was changed" in result["msg"]
    assert not (tmp_path / "new-dir").exists()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"path": "relative/x", "content": "a"}, "files[0] (relative/x): path must be absolute"),
        ({"path": "/x", "state": "file"}, "state=file needs content or secret_content"),
        (
            {"path": "/x", "content": "a", "secret_content": "K3S_TOKEN=t"},
            "give content or secret_content, not both",
        ),
        ({"path": "/x", "state": "link"}, "state=link needs src"),
        ({"path": "/x", "state": "directory", "src": "y"}, "src is only for state=link"),
        ({"path": "/x", "state": "directory", "content": "y"}, "content is only for state=file"),
        ({"path": "/x", "content": "a", "mode": "u+rw"}, "mode=u+rw must be an octal string"),
        ({"path": "/etc/x\0y", "content": "a"}, "path and src must not contain a NUL byte"),
        ({"path": "/x", "state": "link", "src": "k3s\0"}, "path and src must not contain a NUL byte"),
    ],
)
def test_bad_entries_are_named(run_module, tmp_path, entry, message):
    result = run_module(node_files.main, {"files": [entry]})
    assert result.get("failed") is True
    assert message in result["msg"]


def test_the_same_path_twice_is_refused(run_module, tmp_path):
    files = [{"path": str(tmp_path / "a"), "content": "1"}, {"path": str(tmp_path / "a/"), "content": "2"}]
    result = run_module(node_files.main, {"files": files})
    assert "path is listed twice" in result["msg"]
    assert not (tmp_path / "a").exists()


def test_absent_removes_files_links_and_directories(run_module, tmp_path):
    (tmp_path / "dropin.d").mkdir()
    (tmp_path / "dropin.d/50.conf").write_text("x")
    (tmp_path / "link").symlink_to("nowhere")
    files = [
        {"path": str(tmp_path / "dropin.d"), "state": "absent"},
        {"path": str(tmp_path / "link"), "state": "absent"},
        {"path": str(tmp_path / "never"), "state": "absent"},
    ]
    result = run_module(node_files.main, {"files": files})
    assert [item["result"] for item in result["files"]] == ["removed", "removed", "unchanged"]
    assert list(tmp_path.iterdir()) == []


def test_large_or_binary_contents_are_not_put_in_the_diff(run_module, tmp_path):
    big = "x" * (70 * 1024)
    result = run_module(
        node_files.main, {"files": [{"path": str(tmp_path / "big"), "content": big}]}, diff=True
    )
    (diff,) = result["diff"]
    assert diff["after"] == f"({len(big)} bytes)\n"
    assert (tmp_path / "big").read_text() == big


def test_the_diff_shows_the_whole_old_file(run_module, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("node-name: a\nnode-label: [x, y, z]\ndisable: [traefik]\n")
    result = run_module(
        node_files.main, {"files": [{"path": str(path), "content": "node-name: a\n"}]}, diff=True
    )
    (diff,) = result["diff"]
    assert diff["before"] == "node-name: a\nnode-label: [x, y, z]\ndisable: [traefik]\n"
    assert diff["after"] == "node-name: a\n"


def test_a_large_old_file_is_replaced_without_being_shown(run_module, tmp_path):
    path = tmp_path / "images.tar"
    path.write_bytes(b"\0" * (node_files_utils.DIFF_LIMIT + 10))
    result = run_module(node_files.main, {"files": [{"path": str(path), "content": "small\n"}]}, diff=True)
    (diff,) = result["diff"]
    assert diff["before"] == "(content not shown)\n"
    assert path.read_text() == "small\n"


def test_content_that_is_not_utf8_is_named_not_a_traceback(tmp_path):
    # ansible-core 2.19+ refuses a lone surrogate while decoding the module's arguments, so the
    # module never sees one there; older cores pass it through. The converger names it either way.
    path = tmp_path / "env"
    converger = node_files_utils.Converger(SimpleNamespace(check_mode=False))
    entry = {"path": str(path), "state": "file", "content": "A=\ud800\n"}
    with pytest.raises(node_files_utils.NodeFilesError) as failure:
        converger.converge([entry])
    assert f"{path} (file):" in str(failure.value) and "surrogate" in str(failure.value)
    assert not path.exists()
