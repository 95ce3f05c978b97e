# -*- coding: utf-8 -*-
# Copyright: edgewasm.llamaedge contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks of a deployed system: pods, endpoints, answers and the traffic split, with a report.

The seed's pod tests, made strict: every check has a pass/fail verdict and the module fails when one
fails. Cluster reads go through the DynamicClient; HTTP goes through an ``opener`` (Ansible's
open_url in the module) so the checks can be tested against real local servers.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.edgewasm.llamaedge.plugins.module_utils.llama_contract import BACKEND_HEADER


def _items(client, api_version, kind, namespace, label_selector=None, field_selector=None):
    resource = client.resources.get(api_version=api_version, kind=kind)
    kwargs = {"namespace": namespace}
    if label_selector:
        kwargs["label_selector"] = label_selector
    if field_selector:
        kwargs["field_selector"] = field_selector
    return client.get(resource, **kwargs).to_dict().get("items") or []


# Failures of WASM pods recognised in container messages and events, with what to do about them. What each
# runtime says differs: crun and the wasmedge CLI log WasmEdge's linking detail ("unknown import, Code: 0x302",
# the module "wasi_ephemeral_nn" or "wasi:logging/logging"), which reaches the pod status through the containers'
# FallbackToLogsOnError termination message; runwasi's shim reports only "unknown import" (wasmedge-types'
# error text) and writes the detail to its own log.
_PLUGIN_NOT_LOADED = (
    "the WASI-NN plugin was not loaded inside the container (not found, or one of its libraries is missing "
    "there): check WASMEDGE_PLUGIN_PATH and the library mounts from wasmedge_plugin_deps on that node"
)
KNOWN_FAILURES = (
    (
        ("wasi_logging", "wasi:logging"),
        "the image's llama-api-server.wasm imports wasi:logging, which runwasi's WasmEdge shim does not provide: "
        "serve it with crun (runtime_class crun-wasm), or build the server with its wasi_logger setup removed "
        "(see the image option of llama_backend)",
    ),
    (("wasi_ephemeral_nn", "0x302"), _PLUGIN_NOT_LOADED),
    (
        ("invalid magic characters", "unable to init model"),
        "the GGML backend cannot load the model file: check that it is a complete GGUF file (gguf_info)",
    ),
)
# runwasi's bare "unknown import": either cause above; the shim's log on the node says which.
UNKNOWN_IMPORT_HINT = (
    'the runtime could not link an import of llama-api-server.wasm (runwasi\'s shim says only "unknown import"): '
    "either the image's wasm imports wasi:logging, which the shim does not provide (serve it with crun, "
    "runtime_class crun-wasm, or use a build without wasi_logger), or " + _PLUGIN_NOT_LOADED + "; the shim's "
    "log on that node (journalctl -u k3s or k3s-agent) names the import"
)


def _messages(statuses):
    """Reasons and messages of the containers' current and last states (where runtime errors appear)."""
    out = []
    for status in statuses:
        for state in ((status.get("state") or {}), (status.get("lastState") or {})):
            for detail in state.values():
                if isinstance(detail, dict) and detail.get("message"):
                    out.append("%s: %s" % (detail.get("reason", ""), detail["message"]))
    return out


def diagnose(texts):
    """What to do about the known failures found in these messages (each hint once)."""
    joined = "\n".join(texts)
    hints = [hint for needles, hint in KNOWN_FAILURES if any(n in joined for n in needles)]
    linking = KNOWN_FAILURES[0][1] in hints or _PLUGIN_NOT_LOADED in hints
    if "unknown import" in joined and not linking:
        hints.append(UNKNOWN_IMPORT_HINT)
    return hints


def pod_report(client, namespace, backend):
    """Status of a backend's pods: phase, readiness, restarts, waiting reasons and warning events."""
    selector = "app.kubernetes.io/component=backend,app.kubernetes.io/instance=%s" % backend
    pods = []
    for pod in _items(client, "v1", "Pod", namespace, label_selector=selector):
        name = pod["metadata"]["name"]
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        waiting = [
            s["state"]["waiting"].get("reason", "") for s in statuses if (s.get("state") or {}).get("waiting")
        ]
        events = _items(
            client, "v1", "Event", namespace, field_selector="involvedObject.name=%s,type=Warning" % name
        )
        pods.append(
            {
                "name": name,
                "node": (pod.get("spec") or {}).get("nodeName"),
                "phase": (pod.get("status") or {}).get("phase"),
                "ready": bool(statuses) and all(s.get("ready") for s in statuses),
                "restarts": sum(s.get("restartCount", 0) for s in statuses),
                "waiting": waiting,
                "warnings": ["%s: %s" % (e.get("reason"), e.get("message")) for e in events],
                "messages": _messages(statuses),
            }
        )
    slices = _items(
        client,
        "discovery.k8s.io/v1",
        "EndpointSlice",
        namespace,
        label_selector="kubernetes.io/service-name=%s" % backend,
    )
    ready_endpoints = sum(
        1
        for s in slices
        for e in s.get("endpoints") or []
        if (e.get("conditions") or {}).get("ready") is not False
    )
    return {"backend": backend, "pods": pods, "ready_endpoints": ready_endpoints}


def chat(opener, url, model, prompt, max_tokens, timeout):
    """One chat completion; returns what the checks need, never raises for HTTP or network errors."""
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens}
    if model:
        body["model"] = model
    started = time.monotonic()
    try:
        response = opener(url.rstrip("/") + "/v1/chat/completions", json.dumps(body), timeout)
        payload = json.loads(response.read() or b"{}")
        status = getattr(response, "status", None) or response.getcode()
        backend = response.headers.get(BACKEND_HEADER)
    except Exception as exc:  # pylint: disable=broad-except  # HTTPError, URLError, timeouts, bad JSON
        return {
            "ok": False,
            "model": model,
            "error": "%s: %s" % (type(exc).__name__, exc),
            "seconds": round(time.monotonic() - started, 3),
        }
    answer = ((payload.get("choices") or [{}])[0].get("message") or {}).get("content")
    return {
        "ok": status == 200 and bool(answer),
        "status": status,
        "model": model,
        "answered_by": backend,
        "answer_model": payload.get("model"),
        "seconds": round(time.monotonic() - started, 3),
        "error": None if answer else "no choices[0].message.content in the answer",
    }


def batch(opener, url, count, concurrency, prompt, max_tokens, timeout):
    if concurrency <= 1:
        return [chat(opener, url, None, prompt, max_tokens, timeout) for _attempt in range(count)]
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [
            pool.submit(chat, opener, url, None, prompt, max_tokens, timeout) for _attempt in range(count)
        ]
        return [f.result() for f in futures]


def distribution(results, weights, tolerance):
    """Each backend's share of the answered requests against its weight's share, within ``tolerance``."""
    total_weight = float(sum(weights.values()))
    answered = [r for r in results if r["ok"]]
    counts = dict.fromkeys(weights, 0)
    others = 0
    for result in answered:
        if result.get("answered_by") in counts:
            counts[result["answered_by"]] += 1
        else:
            others += 1
    rows = []
    for name, weight in sorted(weights.items()):
        expected = weight / total_weight
        observed = counts[name] / float(len(answered)) if answered else 0.0
        rows.append(
            {
                "backend": name,
                "weight": weight,
                "count": counts[name],
                "expected": round(expected, 4),
                "observed": round(observed, 4),
                "ok": abs(observed - expected) <= tolerance,
            }
        )
    failed = [r for r in results if not r["ok"]]
    return {
        "rows": rows,
        "requests": len(results),
        "failed": len(failed),
        "unknown_backend": others,
        "ok": bool(answered) and not failed and not others and all(r["ok"] for r in rows),
    }


def pod_problems(report, min_ready):
    problems = []
    for pod in report["pods"]:
        if not pod["ready"]:
            hints = diagnose(pod.get("messages", []) + pod.get("warnings", []))
            problems.append(
                "pod %s is not ready (phase %s%s)%s"
                % (
                    pod["name"],
                    pod["phase"],
                    ", waiting: " + ", ".join(pod["waiting"]) if pod["waiting"] else "",
                    "".join("; " + hint for hint in hints),
                )
            )
    if report["ready_endpoints"] < min_ready:
        problems.append(
            "Service %s has %d ready endpoints, expected %d"
            % (report["backend"], report["ready_endpoints"], min_ready)
        )
    return problems


def restarted(before, after):
    """Pods whose restart count grew between two reports of the same backend."""
    counts = {p["name"]: p["restarts"] for p in before["pods"]}
    return [
        "pod %s restarted %d time(s) during the checks" % (p["name"], p["restarts"] - counts[p["name"]])
        for p in after["pods"]
        if p["name"] in counts and p["restarts"] > counts[p["name"]]
    ]


def markdown(report):
    lines = [
        "# edgewasm.llamaedge verification",
        "",
        "Result: **%s**" % ("PASS" if report["ok"] else "FAIL"),
        "",
    ]
    if report["problems"]:
        lines += ["## Problems", ""] + ["- %s" % p for p in report["problems"]] + [""]
    for phase in ("before", "after"):
        lines += [
            "## Pods %s the requests" % phase,
            "",
            "| backend | pod | node | phase | ready | restarts | warnings |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for backend in report["pods_" + phase]:
            for pod in backend["pods"]:
                lines.append(
                    "| %s | %s | %s | %s | %s | %d | %s |"
                    % (
                        backend["backend"],
                        pod["name"],
                        pod["node"],
                        pod["phase"],
                        "yes" if pod["ready"] else "no",
                        pod["restarts"],
                        "; ".join(pod["warnings"]) or "-",
                    )
                )
        lines.append("")
    lines += [
        "## One chat completion per backend (routed by model)",
        "",
        "| backend | model | answered by | status | seconds |",
        "| --- | --- | --- | --- | --- |",
    ]
    for check in report["per_backend"]:
        lines.append(
            "| %s | %s | %s | %s | %s |"
            % (
                check["backend"],
                check["model"],
                check.get("answered_by"),
                "ok" if check["ok"] else check.get("error"),
                check["seconds"],
            )
        )
    lines.append("")
    for name in ("sequential", "concurrent"):
        dist = report["distribution"][name]
        lines += [
            "## Traffic split, %s (%d requests, %d failed)" % (name, dist["requests"], dist["failed"]),
            "",
            "| backend | weight | count | expected | observed | within tolerance |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for row in dist["rows"]:
            lines.append(
                "| %s | %d | %d | %.3f | %.3f | %s |"
                % (
                    row["backend"],
                    row["weight"],
                    row["count"],
                    row["expected"],
                    row["observed"],
                    "yes" if row["ok"] else "NO",
                )
            )
        lines.append("")
    return "\n".join(lines)


def model_labels(backends, label):
    """Backend labels by model name, for the model names exactly one backend serves."""
    names = [b["model_name"] for b in backends]
    return {b["model_name"]: label[b["name"]] for b in backends if names.count(b["model_name"]) == 1}


def identify(results, by_model):
    """Which backend answered each result: the balancer's X-Edgewasm-Backend when it sends one (its
    backend_header option), else the backend serving the answer's model when only one does."""
    for result in results:
        if result.get("answered_by") is not None:
            result["identified_by"] = "header"
        elif result.get("answer_model") in by_model:
            result["answered_by"] = by_model[result["answer_model"]]
            result["identified_by"] = "model"
    return results


def unidentified_problem(results, by_model):
    """One line when answers could not be traced to a backend, saying how to fix it."""
    unknown = sorted(
        {r.get("answer_model") or "" for r in results if r["ok"] and r.get("answered_by") is None}
    )
    if not unknown:
        return []
    return [
        "%d answers name no backend: the balancer sends no X-Edgewasm-Backend header and their models (%s) are "
        "not served by exactly one listed backend (%s); give the backends distinct model names or turn on the "
        "balancer's backend header (balancer_backend_header: true)"
        % (
            sum(1 for r in results if r["ok"] and r.get("answered_by") is None),
            ", ".join(repr(m) for m in unknown),
            ", ".join(sorted(by_model)) or "none",
        )
    ]


def _answer_checks(http, url, backends, label, ask):
    """One request per backend, routed by its model: it must answer, and the balancer must name it."""
    per_backend = []
    by_model = model_labels(backends, label)
    for backend in backends:
        result = identify([chat(http, url, backend["model_name"], *ask)], by_model)[0]
        result["backend"] = backend["name"]
        expected = label[backend["name"]]
        if result["ok"] and result.get("answered_by") is None:
            result["ok"] = False
            result["error"] = (
                "the answer names no backend (no X-Edgewasm-Backend header, and its model %r is not served by "
                "exactly one listed backend)" % result.get("answer_model")
            )
        elif result["ok"] and result.get("answered_by") != expected:
            result["ok"] = False
            result["error"] = "answered by %s, expected %s" % (result.get("answered_by"), expected)
        per_backend.append(result)
    return per_backend


def split_problems(name, split, tolerance):
    """The problems of one batch's traffic split (from distribution), as report lines."""
    problems = [
        "%s batch: %s got %.1f%% of the answers, its weight asks for %.1f%% (tolerance %.1f points)"
        % (name, row["backend"], row["observed"] * 100, row["expected"] * 100, tolerance * 100)
        for row in split["rows"]
        if not row["ok"]
    ]
    if split["failed"]:
        problems.append("%s batch: %d of %d requests failed" % (name, split["failed"], split["requests"]))
    if split["unknown_backend"]:
        problems.append(
            "%s batch: %d answers came from backends not listed" % (name, split["unknown_backend"])
        )
    return problems


def run_checks(client, params, http):
    """Every check of llama_verify for its ``params``; ``http`` is the opener (see chat)."""
    ns = params["namespace"]
    backends = params["backends"]
    label = {b["name"]: params["backend_label"].format(namespace=ns, name=b["name"]) for b in backends}
    ask = (params["prompt"], params["max_tokens"], params["timeout"])
    url = params["balancer_url"]
    before = [pod_report(client, ns, b["name"]) for b in backends]
    per_backend = _answer_checks(http, url, backends, label, ask)
    weights = {label[b["name"]]: int(b.get("weight", 1)) for b in backends}
    by_model = model_labels(backends, label)
    requests = {
        "sequential": identify(batch(http, url, params["sequential"], 1, *ask), by_model),
        "concurrent": identify(batch(http, url, params["concurrent"], params["concurrency"], *ask), by_model),
    }
    after = [pod_report(client, ns, b["name"]) for b in backends]
    problems = []
    for backend, report_before, report_after in zip(backends, before, after):  # noqa: B905 - py3.8 targets
        problems += pod_problems(report_after, int(backend.get("replicas", 1)))
        problems += restarted(report_before, report_after)
    problems += [
        "backend %s (model %s): %s" % (r["backend"], r["model"], r["error"])
        for r in per_backend
        if not r["ok"]
    ]
    problems += unidentified_problem(per_backend + requests["sequential"] + requests["concurrent"], by_model)
    split = {}
    for name in ("sequential", "concurrent"):
        split[name] = distribution(requests[name], weights, params["tolerance"])
        problems += split_problems(name, split[name], params["tolerance"])
    return {
        "ok": not problems,
        "problems": problems,
        "pods_before": before,
        "pods_after": after,
        "per_backend": per_backend,
        "distribution": split,
        "requests": requests,
    }


def write_reports(report, directory):
    """verify.json and verify.md under ``directory`` (created); their paths."""
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    json_path = os.path.join(directory, "verify.json")
    markdown_path = os.path.join(directory, "verify.md")
    with open(json_path, "w") as handle:
        json.dump(report, handle, indent=2, sort_keys=True)
    with open(markdown_path, "w") as handle:
        handle.write(markdown(report) + "\n")
    return json_path, markdown_path
