"""The STAND-IN llama-api-server.wasm (tests/doubles/llama_api_server_wasm) under the stand-in wasmedge CLI.

A wasm32-wasip1 command of ours on LlamaEdge's WASI-NN guest crate (wasmedge-wasi-nn) and WasmEdge's socket
extension (wasmedge_wasi_socket), run with `wasmedge --nn-preload default:GGML:AUTO:<model>` as the seed ran
the real one: it listens through the engine's socket functions and generates with llama.cpp through WASI-NN
(compute for a JSON answer, compute_single for SSE). What a client sees is checked here as a client sees it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from doubles import wasmedge_tree

pytestmark = pytest.mark.slow
VERSION = "0.14.1"
MODEL = wasmedge_tree.ROOT / "roles/wasi_nn_ggml/files/self_test/self-test.gguf"
CHAT = {"messages": [{"role": "user", "content": "Say hello to the edge."}], "max_tokens": 12}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> dict[str, Path]:
    return wasmedge_tree.build(tmp_path_factory.mktemp("wasmedge") / VERSION, VERSION)


def command(tree, *args: str, preload: bool = True) -> list[str]:
    preloads = ["--nn-preload", f"default:GGML:AUTO:{MODEL}"] if preload else []
    return [str(tree["wasmedge"]), *preloads, str(wasmedge_tree.guest_build()), *args]


@contextlib.contextmanager
def serving(tree, *args: str) -> Iterator[str]:
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "WASMEDGE_PLUGIN_PATH": str(tree["plugin_dir"])}
    proc = subprocess.Popen(
        command(tree, "--model-name", "tiny,tiny-alias", "--port", str(port), *args),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tree) -> Iterator[str]:
    with serving(tree) as url:
        yield url


def test_models_lists_the_model_names(server):
    answer = requests.get(f"{server}/v1/models", timeout=10)
    assert answer.status_code == 200
    assert [m["id"] for m in answer.json()["data"]] == ["tiny", "tiny-alias"]


def test_a_chat_completion_is_generated_by_llama_cpp(server):
    """The answer is the model's: the same prompt gives the same text (a fixed seed), another prompt another;
    bytes that are not UTF-8 reach the client as U+FFFD inside valid JSON."""
    first = requests.post(f"{server}/v1/chat/completions", json=CHAT, timeout=30)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["object"] == "chat.completion" and body["model"] == "tiny"
    content = body["choices"][0]["message"]["content"]
    assert content and body["choices"][0]["finish_reason"] == "stop"
    again = requests.post(f"{server}/v1/chat/completions", json=CHAT, timeout=30).json()
    assert again["choices"][0]["message"]["content"] == content
    other = {**CHAT, "messages": [{"role": "user", "content": "Something else entirely, please."}]}
    answer = requests.post(f"{server}/v1/chat/completions", json=other, timeout=30).json()
    assert answer["choices"][0]["message"]["content"] != content


def events(response: requests.Response) -> list[str]:
    response.encoding = "utf-8"  # SSE is UTF-8 (the content type names no charset)
    return [
        line[len("data: ") :]
        for line in response.iter_lines(decode_unicode=True)
        if line.startswith("data: ")
    ]


def test_a_streamed_completion_is_the_same_text_token_by_token(server):
    """SSE from compute_single, one event per token that completes a character: the deltas join into exactly
    the JSON answer's text, then a stop event and [DONE]."""
    whole = requests.post(f"{server}/v1/chat/completions", json=CHAT, timeout=30).json()
    with requests.post(
        f"{server}/v1/chat/completions", json={**CHAT, "stream": True}, stream=True, timeout=30
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
        data = events(r)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(item) for item in data[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    deltas = [c["choices"][0]["delta"].get("content", "") for c in chunks]
    assert len([d for d in deltas if d]) > 1  # token by token, not one block
    assert "".join(deltas) == whole["choices"][0]["message"]["content"]


def test_a_chunked_request_body_is_read_as_a_whole(server):
    """A client (or a proxy relaying one) may send the body chunked: the same answer as with Content-Length."""
    body = json.dumps(CHAT).encode()
    pieces = iter([body[:7], body[7:30], body[30:]])
    chunked = requests.post(
        f"{server}/v1/chat/completions",
        data=pieces,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert chunked.status_code == 200, chunked.text
    whole = requests.post(f"{server}/v1/chat/completions", json=CHAT, timeout=30).json()
    assert chunked.json()["choices"] == whole["choices"]


def test_bad_requests_get_errors_and_the_server_goes_on(server):
    url = f"{server}/v1/chat/completions"
    assert requests.post(url, data=b"not json", timeout=10).status_code == 400
    assert requests.post(url, json={"messages": []}, timeout=10).status_code == 400
    assert requests.get(url, timeout=10).status_code == 405
    assert requests.get(f"{server}/nowhere", timeout=10).status_code == 404
    huge = requests.get(f"{server}/v1/models", headers={"x-filler": "a" * 20000}, timeout=10)
    assert huge.status_code == 431
    # A client that sends half a request and goes away.
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as half:
        half.sendall(b"POST /v1/chat/completions HTTP/1.1\r\ncontent-length: 100\r\n\r\n{")
    assert requests.get(f"{server}/echo", timeout=10).text == "echo test"


def test_an_unknown_flag_is_refused_as_the_real_server_refuses_it(tree):
    result = subprocess.run(
        command(tree, "--model-name", "tiny", "--bogus", "1"),
        env={"PATH": "/usr/bin:/bin", "WASMEDGE_PLUGIN_PATH": str(tree["plugin_dir"])},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "error: unexpected argument '--bogus' found" in result.stderr


def test_without_the_plugin_it_cannot_start(tree, tmp_path):
    """The module imports wasi_ephemeral_nn: a wasmedge without the plugin cannot instantiate it."""
    empty = tmp_path / "no-plugins"
    empty.mkdir()
    plugin = tree["plugin"]
    aside = tmp_path / plugin.name
    plugin.rename(aside)
    try:
        result = subprocess.run(
            command(tree, "--model-name", "tiny", preload=False),
            env={"PATH": "/usr/bin:/bin", "WASMEDGE_PLUGIN_PATH": str(empty)},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        aside.rename(plugin)
    assert result.returncode == 1
    assert "[error] instantiation failed: unknown import, Code: 0x302" in result.stdout
    assert 'When linking module: "wasi_ephemeral_nn"' in result.stdout
