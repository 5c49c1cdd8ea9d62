"""The probes and Services ``deploy k8s`` writes are answered by a live server: the shared reference Triton
server with the OpenAI API in front of it (what ``serve`` runs in the pod), each port reached by the
name the manifests give it. The pod's ``serve`` argv is checked to bind each named port to the number
the container declares, so the live port for a name is the one ``serve`` would open there."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("tritonclient.grpc")
pytest.importorskip("torch")
pytest.importorskip("fastapi")

from swallow_trt.builders.plan import PlanRequest
from swallow_trt.deploy.k8s import DeployRequest, build_deployment
from swallow_trt.openai_api.server import ApiProcess, start_api_process
from tests.fixtures.ports import free_port
from tests.fixtures.triton import ReferenceServed

pytestmark = [pytest.mark.integration, pytest.mark.requires_triton]

# serve's flag for each container port name (cli/serve.py).
FLAG = {"http": "--http-port", "grpc": "--grpc-port", "metrics": "--metrics-port", "openai": "--openai-port"}


@pytest.fixture(scope="module")
def api(reference_triton: ReferenceServed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    server, repo, _ = reference_triton
    log = tmp_path_factory.mktemp("deploy-probes") / "api.log"
    # With a key, as the pod has one: the probes carry none and must still be answered.
    process = start_api_process(server.grpc_url, repo, port=free_port(), api_key="sk-probe", log_path=log)
    try:
        yield process
    finally:
        process.stop()


def _get(url: str) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=30) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def test_probes_and_service_ports_answer_on_a_live_server(
    reference_triton: ReferenceServed, api: ApiProcess
) -> None:
    server = reference_triton.server
    deployment = build_deployment(DeployRequest(plan=PlanRequest(model="8b", target="hopper")))
    objects = {(m.kind, m.file): m.obj for m in deployment.manifests}
    pod = objects[("Deployment", "deployment.yaml")]["spec"]["template"]["spec"]
    container: dict[str, Any] = pod["containers"][0]
    declared = {p["name"]: p["containerPort"] for p in container["ports"]}
    argv = container["args"]
    for name, number in declared.items():
        assert argv[argv.index(FLAG[name]) + 1] == str(number), name
    api_port = int(api.url.rsplit(":", 1)[1].split("/")[0])
    live = {
        "http": server.http_port,
        "grpc": server.grpc_port,
        "metrics": server.metrics_port,
        "openai": api_port,
    }
    assert set(live) == set(declared)

    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        status, body = _get(f"http://127.0.0.1:{live[get['port']]}{get['path']}")
        assert status == 200, (probe, get, body[:200])

    for (kind, _), obj in objects.items():
        if kind != "Service":
            continue
        for port in obj["spec"]["ports"]:
            with socket.create_connection(("127.0.0.1", live[port["targetPort"]]), timeout=10):
                pass
    status, body = _get(f"http://127.0.0.1:{live['metrics']}/metrics")
    assert status == 200
    assert b"nv_inference_queue_duration_us" in body
