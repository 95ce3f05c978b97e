"""download against a real HTTP server on 127.0.0.1 that honours Range and can cut a transfer short."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
import typing

import pytest

from ansible_collections.edgewasm.llamaedge.plugins.modules import download as module

PAYLOAD = os.urandom(3 * 1024 * 1024 + 123)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    cut_after: int | None = None  # send only this many bytes, then drop the connection
    honour_range = True
    send_length = True  # False: a body delimited only by the end of the connection
    chunked = False  # True: chunked encoding (cut_after then stops before the last chunk)
    status: int | None = None  # answer every request with this error status
    endless = False  # True: an unbounded body (no length), bounded here at 256 MiB so the test ends by itself
    ranges: typing.ClassVar[list[str | None]] = []

    def do_GET(self):
        header = self.headers.get("Range")
        type(self).ranges.append(header)
        if self.status:
            self.send_error(self.status)
            return
        if self.endless:
            self.send_response(200)
            self.end_headers()
            block = b"\0" * (1 << 20)
            try:
                for _block in range(256):
                    self.wfile.write(block)
            except OSError:
                pass  # the client stopped reading: what the test wants
            return
        start = int(header.split("=")[1].rstrip("-")) if header and self.honour_range else 0
        if start >= len(PAYLOAD):  # what real servers answer for a Range past the end
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = PAYLOAD[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        if self.chunked:
            self.protocol_version = "HTTP/1.1"
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            data = body[: self.cut_after] if self.cut_after is not None else body
            self.wfile.write(b"%x\r\n%b\r\n" % (len(data), data))
            if self.cut_after is None:
                self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        if self.send_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.cut_after is not None:
            self.wfile.write(body[: self.cut_after])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Handler.cut_after, Handler.honour_range, Handler.ranges = None, True, []
    Handler.send_length, Handler.chunked, Handler.status, Handler.endless = True, False, None, False
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/model.gguf"
    httpd.shutdown()


def test_download_verify_and_second_run_is_a_no_op(run_module, server, tmp_path):
    dest = tmp_path / "model.gguf"
    first = run_module(module.main, {"url": server, "dest": str(dest), "sha256": SHA})
    assert first["changed"] is True and dest.read_bytes() == PAYLOAD
    second = run_module(module.main, {"url": server, "dest": str(dest), "sha256": SHA.upper()})
    assert second["changed"] is False
    assert len(Handler.ranges) == 1  # the second run did not touch the network


def test_interrupted_download_resumes_with_a_range_request(run_module, server, tmp_path):
    dest = tmp_path / "model.gguf"
    Handler.cut_after = 1024 * 1024
    failed = run_module(module.main, {"url": server, "dest": str(dest), "sha256": SHA})
    assert failed["failed"] is True and "Run again to resume" in failed["msg"]
    assert not dest.exists()
    kept = (tmp_path / "model.gguf.part").stat().st_size
    assert kept > 0
    Handler.cut_after = None
    done = run_module(module.main, {"url": server, "dest": str(dest), "sha256": SHA})
    assert done["changed"] is True and done["resumed_from"] == kept
    assert Handler.ranges[-1] == f"bytes={kept}-"
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "model.gguf.part").exists()


def test_server_ignoring_range_restarts_cleanly(run_module, server, tmp_path):
    dest = tmp_path / "model.gguf"
    (tmp_path / "model.gguf.part").write_bytes(PAYLOAD[:1000])
    Handler.honour_range = False
    done = run_module(module.main, {"url": server, "dest": str(dest), "sha256": SHA})
    assert done["resumed_from"] == 0 and dest.read_bytes() == PAYLOAD


def test_checksum_mismatch_installs_nothing(run_module, server, tmp_path):
    dest = tmp_path / "model.gguf"
    dest.write_bytes(b"the old, good file")
    wrong = "0" * 64
    result = run_module(module.main, {"url": server, "dest": str(dest), "sha256": wrong})
    assert result["failed"] is True
    assert (
        f"checksum mismatch for model.gguf (from {server}): expected sha256 {wrong}, got {SHA}"
        in result["msg"]
    )
    assert dest.read_bytes() == b"the old, good file"
    assert not (tmp_path / "model.gguf.part").exists()


def test_check_mode_and_bad_checksum_format(run_module, server, tmp_path):
    dest = tmp_path / "model.gguf"
    assert run_module(module.main, {"url": server, "dest": str(dest), "sha256": SHA}, check_mode=True)[
        "changed"
    ]
    assert not dest.exists() and Handler.ranges == []
    bad = run_module(module.main, {"url": server, "dest": str(dest), "sha256": "abc"})
    assert bad["failed"] is True and "sha256='abc' must be 64 lowercase hex digits" in bad["msg"]


def test_lock_file_records_on_first_download_then_enforces(run_module, server, tmp_path):
    lock = tmp_path / "edgewasm.lock.json"
    dest = tmp_path / "model.gguf"
    first = run_module(module.main, {"url": server, "dest": str(dest), "lock_file": str(lock)})
    assert first["changed"] is True and first["recorded"] is True
    assert json.loads(lock.read_text())["artifacts"] == {
        "127.0.0.1:" + server.split(":")[2].split("/")[0] + "/model.gguf": SHA
    }
    again = run_module(module.main, {"url": server, "dest": str(dest), "lock_file": str(lock)})
    assert again["changed"] is False and again["sha256"] == SHA
    # The upstream file changes (or is tampered with): the recorded checksum is enforced, nothing is replaced.
    dest.unlink()
    key = next(iter(json.loads(lock.read_text())["artifacts"]))
    lock.write_text(json.dumps({"artifacts": {key: "1" * 64}}))
    tampered = run_module(module.main, {"url": server, "dest": str(dest), "lock_file": str(lock)})
    assert tampered["failed"] is True
    assert f"expected sha256 {'1' * 64}, got {SHA}" in tampered["msg"]
    assert not dest.exists()


def test_sha256_or_lock_file_is_required(run_module, server, tmp_path):
    result = run_module(module.main, {"url": server, "dest": str(tmp_path / "x")})
    assert result["failed"] is True and "one of the following is required: sha256, lock_file" in result["msg"]


@pytest.mark.parametrize("extra", [b"", b"trailing junk"])
def test_a_complete_or_oversized_part_is_verified_or_replaced(run_module, server, tmp_path, extra):
    """A .part as long as the file (or longer) makes the server answer 416 to our Range: verify it or
    start over, never fail forever."""
    dest = tmp_path / "model.gguf"
    (tmp_path / "model.gguf.part").write_bytes(PAYLOAD + extra)
    first = run_module(module.main, {"url": server, "dest": str(dest), "sha256": SHA})
    assert first["changed"] is True and dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "model.gguf.part").exists()
    assert Handler.ranges[0] == f"bytes={len(PAYLOAD + extra)}-"
    assert len(Handler.ranges) == (1 if not extra else 2)  # verified as is, or downloaded again


def test_trust_on_first_use_with_a_complete_part_downloads_again(run_module, server, tmp_path):
    dest, lock = tmp_path / "model.gguf", tmp_path / "lock.json"
    (tmp_path / "model.gguf.part").write_bytes(b"x" * len(PAYLOAD))  # same length, wrong bytes
    result = run_module(module.main, {"url": server, "dest": str(dest), "lock_file": str(lock)})
    assert result["changed"] is True and dest.read_bytes() == PAYLOAD
    port = server.split(":")[2].split("/")[0]
    assert json.loads(lock.read_text())["artifacts"] == {f"127.0.0.1:{port}/model.gguf": SHA}


def test_trust_on_first_use_never_records_a_body_of_unknown_length(run_module, server, tmp_path):
    dest, lock = tmp_path / "model.gguf", tmp_path / "lock.json"
    Handler.send_length, Handler.cut_after = False, 1000  # no length, and the server stops early
    result = run_module(module.main, {"url": server, "dest": str(dest), "lock_file": str(lock)})
    assert result["failed"] is True and "without a Content-Length" in result["msg"]
    assert not dest.exists() and not lock.exists()


def test_trust_on_first_use_refuses_a_chunked_body_cut_short(run_module, server, tmp_path):
    dest, lock = tmp_path / "model.gguf", tmp_path / "lock.json"
    Handler.chunked, Handler.cut_after = True, 1000  # the last chunk never comes
    result = run_module(module.main, {"url": server, "dest": str(dest), "lock_file": str(lock)})
    assert result["failed"] is True and "Run again to resume" in result["msg"]
    assert not dest.exists() and not lock.exists()
    Handler.cut_after = None  # a complete chunked body is fine
    result = run_module(
        module.main, {"url": server, "dest": str(dest), "lock_file": str(lock), "resume": False}
    )
    assert result["changed"] is True and dest.read_bytes() == PAYLOAD


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]", 'must be a JSON object with an "artifacts" object'),
        ('{"artifacts": []}', 'must be a JSON object with an "artifacts" object'),
        ('{"artifacts": {"a/b": "nothex"}}', "must be 64 lowercase hex digits"),
        ("[" * 100000, "lock file"),
    ],
)
def test_a_malformed_lock_file_is_named_with_what_is_wrong(run_module, server, tmp_path, content, message):
    lock = tmp_path / "lock.json"
    lock.write_text(content)
    result = run_module(module.main, {"url": server, "dest": str(tmp_path / "m"), "lock_file": str(lock)})
    assert result["failed"] is True
    assert str(lock) in result["msg"] and message in result["msg"]
    assert "Traceback" not in json.dumps(result)


def test_an_http_error_says_what_it_is_and_not_to_resume(run_module, server, tmp_path):
    Handler.status = 404
    result = run_module(module.main, {"url": server, "dest": str(tmp_path / "m"), "sha256": SHA})
    assert result["failed"] is True
    assert "HTTP 404" in result["msg"] and "resume" not in result["msg"]


def test_an_endless_stream_is_stopped_at_max_bytes_and_removed(run_module, server, tmp_path):
    """Before: an endless stream filled the disk before any checksum was compared."""
    Handler.endless = True
    dest = tmp_path / "model.gguf"
    failed = run_module(module.main, {"url": server, "dest": str(dest), "sha256": SHA, "max_bytes": 5 << 20})
    assert failed["failed"] is True
    assert (
        f"{server} sent more than max_bytes=5242880 bytes: the download was stopped and removed"
        in failed["msg"]
    )
    assert not dest.exists() and not (tmp_path / "model.gguf.part").exists()


def test_a_declared_length_over_max_bytes_is_refused_before_reading(run_module, server, tmp_path):
    dest = tmp_path / "model.gguf"
    failed = run_module(module.main, {"url": server, "dest": str(dest), "sha256": SHA, "max_bytes": 1 << 20})
    assert failed["failed"] is True
    assert (
        f"{server} is {len(PAYLOAD)} bytes, more than max_bytes=1048576 allows: refused before reading"
        in failed["msg"]
    )
    assert not (tmp_path / "model.gguf.part").exists()


def test_the_free_space_of_dest_is_kept(run_module, server, tmp_path):
    """No file system has an exabyte free: the first block already stops the download."""
    dest = tmp_path / "model.gguf"
    failed = run_module(
        module.main, {"url": server, "dest": str(dest), "sha256": SHA, "min_free_bytes": 1 << 60}
    )
    assert failed["failed"] is True
    assert "would leave less than min_free_bytes=1152921504606846976 free" in failed["msg"]
    assert not dest.exists() and not (tmp_path / "model.gguf.part").exists()
    ok = run_module(module.main, {"url": server, "dest": str(dest), "sha256": SHA, "min_free_bytes": 0})
    assert ok["changed"] is True and dest.read_bytes() == PAYLOAD
