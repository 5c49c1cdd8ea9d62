"""``swallow-trt deploy k8s``: write a Kubernetes deployment of a Swallow model; and the commands the
pods it writes run (``engine-guard``, ``leader``, ``worker``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from swallow_trt.cli.options import PLAN_FLAGS, JsonOpt, ModelFlags, model_flags
from swallow_trt.cli.output import emit_json, out

HELP = """Write a Kubernetes deployment of a Swallow model: a directory `kubectl apply -k DIR` deploys.

From a plan (the same --model/format/--tp/--pp/--target/--gpu flags as `build`) or from a packaged
repository (--repo). One pod per replica runs `swallow-trt serve` (Triton + the OpenAI API) on
TP x PP GPUs of the target's product; when TP x PP exceeds --gpus-per-node, each replica is a
LeaderWorkerSet group whose leader starts every rank across the group. A build Job writes the engine
into a PVC; serving pods wait for it (init container: manifest, SM and TensorRT versions). Probes,
PodDisruptionBudget, Services (OpenAI, gRPC, metrics), PodMonitor, PrometheusRule, an HPA or KEDA
ScaledObject, NetworkPolicy; --gateway adds the Gateway API Inference Extension objects (InferencePool,
the llm-d endpoint picker, HTTPRoute). Secrets are referenced, never written: create
NAME-api-key (key api-key) and, for gated models, NAME-hf-token (key token). See README "Kubernetes".

Examples:

  swallow-trt deploy k8s --model 70b --tp 4 --fp8 --target h100x4 --replicas 2 --out k8s/70b

  swallow-trt deploy k8s --model 70b --tp 8 --fp8 --target h100x4 --gateway --autoscaler keda --out k8s/70b-2node

  swallow-trt deploy k8s --model 8b --target hopper --dry-run --json

The pods run the other kinds: `deploy engine-guard` (init container), `deploy leader` and
`deploy worker` (a LeaderWorkerSet group).
"""

DEPLOY_FLAGS = PLAN_FLAGS - {"out", "gpus"}
DeployModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Alias, registry id or local checkpoint (omit with --repo)."),
]


@model_flags(DEPLOY_FLAGS, model=(DeployModelOpt, None))
def deploy(
    flags: ModelFlags,
    kind: Annotated[
        str, typer.Argument(help="k8s (write manifests); engine-guard, leader, worker (in pods).")
    ],
    out_dir: Annotated[Path | None, typer.Option("--out", help="k8s: directory to write.")] = None,
    repo: Annotated[
        Path | None,
        typer.Option("--repo", help="k8s: a packaged engine repository to deploy; in pods: the repository."),
    ] = None,
    replicas: Annotated[int, typer.Option("--replicas", help="Replicas (pods, or groups).")] = 1,
    max_replicas: Annotated[
        int | None, typer.Option("--max-replicas", help="Autoscaler ceiling (default: 2 x --replicas).")
    ] = None,
    gpus_per_node: Annotated[
        int | None,
        typer.Option("--gpus-per-node", help="GPUs of one node (default: the target's); more ranks: LWS."),
    ] = None,
    autoscaler: Annotated[str, typer.Option("--autoscaler", help="hpa, keda or none.")] = "hpa",
    gateway: Annotated[
        bool, typer.Option("--gateway", help="Add InferencePool, endpoint picker and HTTPRoute.")
    ] = False,
    gateway_name: Annotated[
        str, typer.Option("--gateway-name", help="The Gateway the HTTPRoute attaches to.")
    ] = "inference-gateway",
    namespace: Annotated[str, typer.Option("--namespace", help="Namespace of every object.")] = "default",
    name: Annotated[str | None, typer.Option("--name", help="Object name (default: from the model).")] = None,
    image: Annotated[
        str | None, typer.Option("--image", help="swallow-trt image (the Dockerfile's, pushed).")
    ] = None,
    storage_class: Annotated[
        str | None, typer.Option("--storage-class", help="PVC storage class (ReadWriteMany).")
    ] = None,
    client_namespace: Annotated[
        str | None,
        typer.Option("--client-namespace", help="Namespace allowed to the OpenAI/gRPC ports (default: own)."),
    ] = None,
    monitoring_namespace: Annotated[
        str, typer.Option("--monitoring-namespace", help="Namespace allowed to the metrics port.")
    ] = "monitoring",
    prometheus_url: Annotated[
        str, typer.Option("--prometheus-url", help="keda: Prometheus the triggers query.")
    ] = "http://prometheus-operated.monitoring.svc:9090",
    offline: Annotated[bool, typer.Option("--offline", help="The build Job uses the HF cache only.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be written.")] = False,
    as_json: JsonOpt = False,
    manifest: Annotated[
        Path | None, typer.Option("--manifest", help="engine-guard: the build manifest to wait for.")
    ] = None,
    ranks: Annotated[int, typer.Option("--ranks", help="engine-guard: ranks this pod runs.")] = 1,
    host: Annotated[str, typer.Option("--host", help="leader: Triton's bind address.")] = "0.0.0.0",
    http_port: Annotated[int, typer.Option("--http-port", help="leader: Triton HTTP port.")] = 8000,
    grpc_port: Annotated[int, typer.Option("--grpc-port", help="leader: Triton gRPC port.")] = 8001,
    metrics_port: Annotated[int, typer.Option("--metrics-port", help="leader: Triton metrics port.")] = 8002,
    openai_host: Annotated[str, typer.Option("--openai-host", help="leader: API bind address.")] = "0.0.0.0",
    openai_port: Annotated[int, typer.Option("--openai-port", help="leader: API port.")] = 8080,
    ready_timeout: Annotated[
        float, typer.Option("--ready-timeout", help="leader: seconds to load.")
    ] = 1800.0,
) -> None:
    from swallow_trt.errors import UsageError

    if kind == "engine-guard":
        from swallow_trt.deploy.runtime import engine_guard

        if manifest is None:
            raise UsageError("deploy engine-guard needs --manifest", "pass the build manifest to wait for")
        engine_guard(manifest, repo, ranks, say=lambda line: out(f"engine-guard: {line}"))
        return
    if kind == "leader":
        if repo is None or gpus_per_node is None:
            raise UsageError("deploy leader needs --repo and --gpus-per-node", "the manifests pass both")
        _leader(repo, gpus_per_node, host, (http_port, grpc_port, metrics_port), (openai_host, openai_port),
                ready_timeout)  # fmt: skip
        return
    if kind == "worker":
        from swallow_trt.deploy.runtime import wait_until_stopped

        wait_until_stopped()
        return
    if kind != "k8s":
        raise UsageError(f"unknown deploy kind {kind!r}", "use `swallow-trt deploy k8s --out DIR`")
    from swallow_trt.deploy.k8s import (
        DEFAULT_IMAGE,
        DeployRequest,
        build_deployment,
        summary,
        write_deployment,
    )

    if out_dir is None and not dry_run:
        raise UsageError("deploy k8s needs --out DIR (or --dry-run)", "pass the directory to write")
    req = DeployRequest(
        plan=flags.plan_request() if flags.model is not None else None,
        repo=repo,
        replicas=replicas,
        max_replicas=max_replicas,
        gpus_per_node=gpus_per_node,
        autoscaler=autoscaler.strip().lower(),
        gateway=gateway,
        gateway_name=gateway_name,
        namespace=namespace,
        name=name,
        image=image or DEFAULT_IMAGE,
        storage_class=storage_class,
        client_namespace=client_namespace,
        monitoring_namespace=monitoring_namespace,
        prometheus_url=prometheus_url,
        offline=offline,
    )
    deployment = build_deployment(req)
    listing = summary(deployment)
    if dry_run:
        if as_json:
            emit_json({"dry_run": True, "out": str(out_dir) if out_dir else None, **listing,
                       "contents": deployment.files()})  # fmt: skip
            return
        for file, text in deployment.files().items():
            out(f"--- {file}")
            out(text.rstrip())
        return
    assert out_dir is not None
    written = write_deployment(deployment, out_dir)
    if as_json:
        emit_json({"dry_run": False, "out": str(out_dir), **listing})
        return
    workload = listing["workload"]
    out(f"wrote {len(written)} files to {out_dir}: {workload} {listing['name']} x{replicas}, "
        f"{listing['ranks']} rank(s) on {listing['nodes_per_replica']} node(s) of {', '.join(listing['gpu_products'])}")  # fmt: skip
    for m in listing["objects"]:
        out(f"  {m['file']:<28} {m['kind']}/{m['name']}")
    for note in listing["notes"]:
        out(f"note: {note}")
    out(
        f"next: kubectl create secret generic {listing['name']}-api-key -n {namespace} --from-literal=api-key=..."
    )
    if not listing["build_job"]:
        out(f"      copy the repository onto the volume at {listing['repository']} (the pods wait for it)")
    out(f"      kubectl apply -k {out_dir}")


def _leader(repo: Path, gpus_per_node: int, host: str, ports: tuple[int, int, int], api_at: tuple[str, int],
            ready_timeout_s: float) -> None:  # fmt: skip
    """A LeaderWorkerSet leader: serve's wiring (Triton under its watcher, then the OpenAI API beside it)
    with the server the library builds for the group (every rank across its pods, rank 0 here)."""
    import os

    from swallow_trt.deploy.runtime import leader_server, lws_group, wait_for_group
    from swallow_trt.openai_api.server import ApiLaunch
    from swallow_trt.triton_repo.launch import run_until_stopped
    from swallow_trt.triton_repo.recovery import Recovery

    def say(line: str) -> None:
        typer.echo(f"leader: {line}", err=True)

    group = lws_group(os.environ)
    http, grpc, metrics = ports
    server = leader_server(repo, group, gpus_per_node, host=host, http_port=http, grpc_port=grpc,
                           metrics_port=metrics, on_event=say, start_timeout_s=ready_timeout_s,
                           recovery=Recovery(ready_timeout_s=ready_timeout_s))  # fmt: skip
    api = ApiLaunch(server.repo, host=api_at[0], port=api_at[1], ready_timeout_s=ready_timeout_s)
    api.check({"--http-port": http, "--grpc-port": grpc, "--metrics-port": metrics})
    wait_for_group(group, timeout_s=ready_timeout_s, say=say)
    run_until_stopped(
        server,
        on_ready=lambda started: say(f"group {', '.join(group.pods)} ready; OpenAI API on {api.url}"),
        companion=api.companion(),
    )
