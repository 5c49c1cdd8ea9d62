"""``swallow-trt deploy k8s``: the Kubernetes objects of one Swallow deployment, built as data.

Every object is a plain dict with the field names of the Kubernetes API (the tests validate each one
strictly against the Kubernetes 1.31-1.36 schemas, and each custom resource against its upstream CRD),
rendered with ``yaml.safe_dump`` into a directory ``kubectl apply -k`` deploys. Nothing is a string
template. What each object is for is in README.md ("Kubernetes").

The shape comes from the plan (builders.plan.make_plan: TP x PP, the GPUs it fits, memory and decode
floors) or from a packaged repository (``--repo``): N replicas of one pod running ``swallow-trt serve``
when TP x PP fits one node, else a LeaderWorkerSet whose leader launches every rank across its group.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from swallow_trt import __version__
from swallow_trt.builders.plan import Plan, PlanRequest, make_plan, stage_dirs
from swallow_trt.deploy import signals
from swallow_trt.deploy.products import product_label
from swallow_trt.errors import InvalidCombinationError, UsageError

Obj = dict[str, Any]
GIB = 2**30

AUTOSCALERS = ("hpa", "keda", "none")
DEFAULT_IMAGE = f"swallow-trt:{__version__}"
MOUNT = PurePosixPath("/models")  # the PVC: HF cache, checkpoints, engines, repositories
OUT_ROOT = MOUNT / "swallow-trt-out"  # `build --out` inside the PVC

# Container ports. Triton keeps its defaults; the OpenAI API gets its own.
OPENAI_PORT = 8080
HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = signals.METRICS_PORT

# The endpoint picker (llm-d/llm-d-router v0.10.0, 71f4f0999f95b96c49a9d0c4afbd18dfdb943c26:
# config/charts/routerlib/templates/_deployment.yaml, _service.yaml, _rbac.yaml; pkg/epp/server/options.go).
PICKER_IMAGE = "ghcr.io/llm-d/llm-d-router-endpoint-picker:v0.10.0"
PICKER_GRPC_PORT = 9002  # ext_proc, what the gateway calls
PICKER_HEALTH_PORT = 9003
PICKER_METRICS_PORT = 9090
PICKER_CONFIG = "epp-config.yaml"

# Serving pods' resources beside the GPUs: per rank, the engine's share of host memory while it
# loads plus the runtime, and a few cores for Triton's frontends, the API and the stub processes.
CPU_PER_RANK = 4
CPU_API = 2
HOST_MEMORY_PER_RANK = 4 * GIB
# /dev/shm: Triton's Python-backend stubs exchange tensors through it, NCCL uses it between the ranks
# of one pod; 1 GiB per rank is NCCL's usual advice, 2 GiB more for the stubs.
SHM_FIXED = 2 * GIB
SHM_PER_RANK = 1 * GIB
# Engine load can take minutes (a 70B engine read from network storage); the startup probe allows
# this long before the kubelet restarts the container.
STARTUP_BUDGET_S = 30 * 60
# The decode floors are a roofline (a lower bound); a real stream is slower by about this much.
STREAM_SLOWDOWN = 3.0
MIN_GRACE_S = 120
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class DeployRequest:
    plan: PlanRequest | None  # from the build flags; None with ``repo``
    repo: Path | None = None  # a packaged repository to serve instead of building one
    replicas: int = 1
    max_replicas: int | None = None  # default: twice --replicas
    gpus_per_node: int | None = None  # default: the target's GPU count
    autoscaler: str = "hpa"
    gateway: bool = False
    gateway_name: str = "inference-gateway"
    namespace: str = "default"
    name: str | None = None
    image: str = DEFAULT_IMAGE
    storage_class: str | None = None
    client_namespace: str | None = None  # NetworkPolicy: who may reach the OpenAI port (default: own)
    monitoring_namespace: str = "monitoring"
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    offline: bool = False


@dataclass(frozen=True)
class Shape:
    """What one replica is: ranks, nodes, GPUs per pod, and what runs."""

    name: str
    runtime: str  # "engine" (Triton + the OpenAI API) or "pytorch" (trtllm-serve)
    world: int
    nodes: int
    ranks_per_pod: int
    products: tuple[str, ...]  # nvidia.com/gpu.product values a pod may land on
    repo: PurePosixPath | None  # the repository the pods serve (engine runtime)
    wait_for: PurePosixPath  # the manifest the init container waits for
    build: tuple[tuple[str, ...], ...]  # build Job commands (argv after `swallow-trt`), in order
    serve: tuple[str, ...]  # serving argv after `swallow-trt`
    storage_bytes: int
    grace_s: int
    waiting_target: int  # HPA/KEDA: waiting requests per pod to scale out at
    memory_bytes: int
    build_memory_bytes: int = 0  # the quantize stage's host RAM (the plan's upper bound): the Job's limit

    @property
    def multi_node(self) -> bool:
        return self.nodes > 1


@dataclass(frozen=True)
class Manifest:
    file: str
    obj: Obj

    @property
    def kind(self) -> str:
        return str(self.obj["kind"])

    @property
    def api_version(self) -> str:
        return str(self.obj["apiVersion"])

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])


@dataclass(frozen=True)
class Deployment:
    """Everything ``deploy k8s`` writes: the objects, the kustomization, and the adapter rules (Helm
    values for prometheus-adapter, not an object of this namespace)."""

    request: DeployRequest
    shape: Shape
    manifests: tuple[Manifest, ...]
    plan: Plan | None

    @property
    def notes(self) -> list[str]:
        """What the user must know before applying."""
        notes = []
        if self.shape.multi_node and self.shape.build:
            notes.append(
                f"the build Job runs on one node of {self.shape.ranks_per_pod} GPU(s), and `swallow-trt build` "
                f"wants all {self.shape.world} ranks' GPUs on one machine (builders/environment.py): build this "
                "engine where they are, package it, and deploy with --repo"
            )
        if self.shape.runtime == "pytorch":
            notes.append(
                "trtllm-serve's metric names (trtllm_num_requests_waiting, ...) are the endpoint picker's; "
                "they are not checked against a running trtllm-serve here"
            )
            notes.append(
                "trtllm-serve takes no API key: the NetworkPolicy (--client-namespace) is what limits who reaches it"
            )
        return notes

    def files(self) -> dict[str, str]:
        import yaml

        def dump(obj: Any) -> str:
            return str(yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=120))

        out = {m.file: dump(m.obj) for m in self.manifests}
        out["kustomization.yaml"] = dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": self.request.namespace,
                "resources": [m.file for m in self.manifests],
            }
        )
        if self.request.autoscaler == "hpa":
            rules = signals.RECORDING_RULES if self.shape.runtime == "engine" else signals.TRTLLM_SERVE_RULES
            out["prometheus-adapter-values.yaml"] = dump({"rules": {"custom": signals.adapter_rules(rules)}})
        return out


# --- checks ---------------------------------------------------------------------------------------


def check_dns_label(value: str, flag: str) -> None:
    if not DNS_LABEL.match(value):
        raise UsageError(
            f"{flag} {value!r} is not a DNS label",
            "use lowercase letters, digits and '-', starting with a letter, at most 63 characters",
        )


def default_name(model: str) -> str:
    """A DNS-label name from a model id: its last path part, lowercased, other characters as '-'."""
    short = model.rstrip("/").split("/")[-1].lower()
    name = re.sub(r"[^a-z0-9]+", "-", short).strip("-")
    if not name or not name[0].isalpha():
        name = "swallow-" + name
    # Room for the longest suffix (``-epp``, ``-build-<hash>``, LWS pod ``-<group>-<index>``).
    return name[:40].rstrip("-")


def _check_request(req: DeployRequest) -> None:
    check_dns_label(req.namespace, "--namespace")
    if req.name is not None:
        check_dns_label(req.name, "--name")
        if len(req.name) > 40:
            raise UsageError(f"--name {req.name!r} is longer than 40 characters", "pass a shorter --name")
    if req.client_namespace is not None:
        check_dns_label(req.client_namespace, "--client-namespace")
    check_dns_label(req.monitoring_namespace, "--monitoring-namespace")
    if req.replicas < 1:
        raise UsageError(f"--replicas must be at least 1, got {req.replicas}", "pass --replicas 1 or more")
    if req.max_replicas is not None and req.max_replicas < req.replicas:
        raise UsageError(
            f"--max-replicas {req.max_replicas} is below --replicas {req.replicas}",
            "pass a --max-replicas of at least --replicas",
        )
    if req.gpus_per_node is not None and req.gpus_per_node < 1:
        raise UsageError(f"--gpus-per-node must be at least 1, got {req.gpus_per_node}", "pass 1 or more")
    if req.autoscaler not in AUTOSCALERS:
        raise UsageError(f"unknown --autoscaler {req.autoscaler!r}", "choose hpa, keda or none")
    if not req.image.strip() or any(c.isspace() for c in req.image):
        raise UsageError(
            f"--image {req.image!r} is not an image reference", "pass e.g. registry/swallow-trt:TAG"
        )
    if (req.plan is None) == (req.repo is None):
        raise UsageError("deploy k8s needs --model (with the build flags) or --repo", "pass one of them")


def _nodes(world: int, per_node: int) -> int:
    if world <= per_node:
        return 1
    if world % per_node:
        raise InvalidCombinationError(
            f"TP x PP = {world} ranks do not split evenly over nodes of {per_node} GPU(s)",
            f"use --gpus-per-node that divides {world}, or a TP/PP whose product is a multiple of {per_node}",
        )
    return world // per_node


# --- the shape ------------------------------------------------------------------------------------


def _plan_flags(req: PlanRequest, plan: Plan) -> list[str]:
    """The flags that make ``build`` plan exactly ``plan`` (its resolved values, not the defaults)."""
    flags = ["--model", plan.model.hf_ref, "--target", plan.profile.name, "--runtime", plan.runtime,
             "--qformat", plan.qformat, "--kv-cache-dtype", plan.kv_cache_dtype, "--dtype", plan.dtype,
             "--tp", str(plan.tp), "--pp", str(plan.pp), "--gpus", str(plan.world_size),
             "--max-batch-size", str(plan.max_batch_size), "--max-input-len", str(plan.max_input_len),
             "--max-seq-len", str(plan.max_seq_len), "--max-num-tokens", str(plan.max_num_tokens)]  # fmt: skip
    if plan.model.arch.is_moe:
        flags += ["--moe-tp-size", str(plan.moe_tp_size), "--moe-ep-size", str(plan.moe_ep_size)]
    if req.gpu is not None:
        flags += ["--gpu", req.gpu]
    return [*flags, "--out", str(OUT_ROOT)]


def _grace_s(plan: Plan) -> int:
    """Longer than the longest stream: max_seq_len tokens at the slowest fitting GPU's full-batch
    decode floor, times the slowdown a real stream shows over the roofline, plus a margin."""
    step = max(g.decode_floor_batch_s for g in plan.gpus if g.fits)
    return max(MIN_GRACE_S, math.ceil(plan.max_seq_len * step * STREAM_SLOWDOWN) + 30)


def _waiting_target(plan: Plan) -> int:
    """Scale out once a tenth of a replica's batch waits on average (at least one request)."""
    concurrent = min(g.concurrent_sequences for g in plan.gpus if g.fits)
    return max(1, round(concurrent / 10))


def shape_from_plan(req: DeployRequest) -> tuple[Shape, Plan]:
    assert req.plan is not None
    preq = req.plan
    if preq.target is None and preq.profile_path is None:
        raise UsageError(
            "deploy k8s needs --target (or --profile)", "pass the GPU target the cluster's nodes have"
        )
    from swallow_trt.builders.plan import load_target

    profile = load_target(preq)
    tp = preq.tp or profile.tp
    pp = preq.pp or profile.pp
    world = tp * pp
    per_node = req.gpus_per_node or profile.gpu_count
    nodes = _nodes(world, per_node)
    out = Path(str(OUT_ROOT))
    plan = make_plan(replace(preq, gpus=world, out=out, runtime=preq.runtime))
    fitting = [g for g in plan.gpus if g.fits]
    if preq.gpu is not None and not fitting:
        raise InvalidCombinationError(
            f"the plan does not fit on {preq.gpu}", "choose another --gpu or format"
        )
    products = tuple(dict.fromkeys(product_label(g.gpu.name) for g in fitting))
    name = req.name or default_name(plan.model.display_name)
    flags = _plan_flags(preq, plan)
    common: dict[str, Any] = {
        "name": name, "world": world, "nodes": nodes, "ranks_per_pod": min(world, per_node),
        "products": products, "grace_s": _grace_s(plan), "waiting_target": _waiting_target(plan),
        # Checkpoint, engine and repository, the HF download, and room for a rebuild.
        "storage_bytes": math.ceil((plan.host.disk_bytes + plan.host.hf_checkpoint_bytes) * 1.25 / GIB) * GIB,
        "build_memory_bytes": plan.host.ram_bytes,
        "memory_bytes": HOST_MEMORY_PER_RANK * min(world, per_node)
        + math.ceil(plan.host.engine_bytes / max(nodes, 1)),
    }  # fmt: skip
    if plan.runtime == "pytorch":
        from swallow_trt.builders.pytorch_runtime import pytorch_layout

        layout = pytorch_layout(replace(preq, out=out), plan)
        root = PurePosixPath(str(layout.root))
        shape = Shape(
            runtime="pytorch",
            repo=None,
            wait_for=root / "build.json",
            build=(tuple(["build", *flags]),),
            # What `serve --runtime pytorch` takes to find the build: trtllm-serve on 0.0.0.0.
            serve=(
                "serve",
                "--runtime",
                "pytorch",
                "--model",
                plan.model.hf_ref,
                "--target",
                plan.profile.name,
                "--qformat",
                plan.qformat,
                "--kv-cache-dtype",
                plan.kv_cache_dtype,
                "--tp",
                str(plan.tp),
                "--pp",
                str(plan.pp),
                "--out",
                str(OUT_ROOT),
                "--http-port",
                str(OPENAI_PORT),
            ),
            **common,
        )
        return shape, plan
    dirs = stage_dirs(replace(preq, out=out), plan.model, plan.profile, plan.qformat, plan.kv_cache_dtype,
                      plan.tp, plan.pp)  # fmt: skip
    repo = PurePosixPath(str(dirs["repo"]))
    engine = PurePosixPath(str(dirs["engine"]))
    package = ["package", "--engine", str(engine), "--out", str(repo), "--backend", "tensorrtllm"]
    shape = Shape(
        runtime="engine",
        repo=repo,
        wait_for=engine / "manifest.json",
        build=(tuple(["build", *flags]), tuple(package)),
        serve=_serve_argv(repo),
        **common,
    )
    return shape, plan


def _serve_argv(repo: PurePosixPath) -> tuple[str, ...]:
    return ("serve", "--repo", str(repo), "--host", "0.0.0.0", "--http-port", str(HTTP_PORT),
            "--grpc-port", str(GRPC_PORT), "--metrics-port", str(METRICS_PORT), "--openai-host", "0.0.0.0",
            "--openai-port", str(OPENAI_PORT), "--ready-timeout", str(STARTUP_BUDGET_S))  # fmt: skip


def shape_from_repo(req: DeployRequest) -> Shape:
    """A packaged repository: its engine gives the ranks; the pods serve the copy under /models/repos."""
    from swallow_trt.triton_repo.launch import inspect_repo

    assert req.repo is not None
    info = inspect_repo(req.repo)
    if info.backend != "tensorrtllm" or info.engine_dir is None:
        raise UsageError(
            f"{req.repo} serves the {info.backend} backend, not a TensorRT-LLM engine",
            "deploy an engine repository (`swallow-trt package --engine ...`), or deploy from --model",
        )
    import json

    manifest_path = info.engine_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    gpu = (manifest.get("gpu") or {}).get("name")
    if not gpu:
        raise UsageError(
            f"{manifest_path} does not name the GPU the engine was built on",
            "rebuild with `swallow-trt build` (it records the GPU), or deploy from --model",
        )
    from swallow_trt.deploy.products import sanitise

    per_node = req.gpus_per_node or info.world_size
    nodes = _nodes(info.world_size, per_node)
    name = req.name or default_name(info.repo.name)
    repo = MOUNT / "repos" / name
    relative = info.engine_dir.relative_to(info.repo) if info.engine_dir.is_relative_to(info.repo) else None
    if relative is None:
        raise UsageError(
            f"the engine {info.engine_dir} lies outside the repository {info.repo}",
            "package with `swallow-trt package` so the repository carries its engine",
        )
    size = sum(p.stat().st_size for p in info.repo.rglob("*") if p.is_file())
    shape = Shape(
        name=name,
        runtime="engine",
        world=info.world_size,
        nodes=nodes,
        ranks_per_pod=min(info.world_size, per_node),
        products=(sanitise(gpu),),
        repo=repo,
        wait_for=repo / PurePosixPath(relative.as_posix()) / "manifest.json",
        build=(),
        serve=_serve_argv(repo),
        storage_bytes=max(10 * GIB, math.ceil(size * 1.25 / GIB) * GIB),
        grace_s=600,  # no plan to derive it from: ten minutes
        waiting_target=8,
        memory_bytes=HOST_MEMORY_PER_RANK * min(info.world_size, per_node) + math.ceil(size / max(nodes, 1)),
    )
    return shape


# --- objects ----------------------------------------------------------------------------------


def _meta(name: str, labels: dict[str, str], **extra: Any) -> Obj:
    return {"name": name, "labels": dict(labels), **extra}


def _quantity(n_bytes: int) -> str:
    return f"{math.ceil(n_bytes / GIB)}Gi"


class Builder:
    def __init__(self, req: DeployRequest, shape: Shape) -> None:
        self.req = req
        self.s = shape
        self.name = shape.name
        self.labels = {
            "app.kubernetes.io/name": "swallow-trt",
            "app.kubernetes.io/instance": shape.name,
            "app.kubernetes.io/managed-by": "swallow-trt",
            "app.kubernetes.io/version": __version__,
        }
        self.server_selector = {
            "app.kubernetes.io/instance": shape.name,
            "app.kubernetes.io/component": "server",
        }
        if shape.multi_node:
            # Services, the PodMonitor and the pool select the leaders: rank 0 serves HTTP/gRPC/metrics.
            self.serving_selector = {**self.server_selector, "swallow-trt/role": "leader"}
        else:
            self.serving_selector = dict(self.server_selector)
        self.engine_label = (
            signals.PICKER_ENGINE if shape.runtime == "engine" else signals.TRTLLM_SERVE_ENGINE
        )

    def component(self, name: str) -> dict[str, str]:
        return {**self.labels, "app.kubernetes.io/component": name}

    # -- storage, secrets, build

    @property
    def pvc_name(self) -> str:
        return f"{self.name}-models"

    @property
    def api_key_secret(self) -> str:
        return f"{self.name}-api-key"

    @property
    def hf_secret(self) -> str:
        return f"{self.name}-hf-token"

    def pvc(self) -> Obj:
        spec: Obj = {
            # Several pods on several nodes mount it (the build Job, every replica, every node of a group).
            "accessModes": ["ReadWriteMany"],
            "resources": {"requests": {"storage": _quantity(self.s.storage_bytes)}},
        }
        if self.req.storage_class:
            spec["storageClassName"] = self.req.storage_class
        return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": _meta(self.pvc_name, self.component("storage")), "spec": spec}  # fmt: skip

    def env(self, serving: bool) -> list[Obj]:
        env: list[Obj] = [
            {"name": "HF_HOME", "value": str(MOUNT / "hf")},
            # Serving pods mount the models read-only; the tool's own cache goes to scratch space.
            {
                "name": "SWALLOW_TRT_HOME",
                "value": "/scratch/swallow-trt" if serving else str(MOUNT / "cache"),
            },
        ]
        if serving or self.req.offline:
            # Serving never downloads (the build Job fetched everything into the PVC's HF cache).
            env += [{"name": "HF_HUB_OFFLINE", "value": "1"}, {"name": "TRANSFORMERS_OFFLINE", "value": "1"}]
        if not serving:
            env.append(
                {
                    "name": "HF_TOKEN",
                    "valueFrom": {"secretKeyRef": {"name": self.hf_secret, "key": "token", "optional": True}},
                }
            )
        return env

    def node_affinity(self) -> Obj:
        return {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [
                            {"key": "nvidia.com/gpu.product", "operator": "In", "values": list(self.s.products)}
                        ]}
                    ]
                }
            }
        }  # fmt: skip

    def pod_security(self) -> Obj:
        # The Triton NGC images carry the unprivileged user triton-server (uid 1000).
        return {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                "seccompProfile": {"type": "RuntimeDefault"}}  # fmt: skip

    @staticmethod
    def container_security() -> Obj:
        return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}

    def gpu_resources(self, gpus: int, cpu: int, memory: int, limit: int | None = None) -> Obj:
        """``memory`` requested; the limit adds /dev/shm (a memory-backed volume counts against it)."""
        return {
            "requests": {"cpu": str(cpu), "memory": _quantity(memory), "nvidia.com/gpu": str(gpus)},
            "limits": {
                "memory": _quantity(max(memory, limit or 0) + self.shm_bytes),
                "nvidia.com/gpu": str(gpus),
            },
        }

    @property
    def shm_bytes(self) -> int:
        return SHM_FIXED + SHM_PER_RANK * self.s.ranks_per_pod

    def build_job(self) -> Obj | None:
        if not self.s.build:
            return None
        digest = hashlib.sha256(repr(self.s.build).encode()).hexdigest()[:8]
        gpus = self.s.ranks_per_pod
        steps = [
            {
                "name": step[0],
                "image": self.req.image,
                "command": ["swallow-trt"],
                "args": list(step),
                "env": self.env(serving=False),
                # Requested as a server needs; allowed up to the quantize stage's upper bound (with
                # the weights on the GPUs, calibration uses far less host RAM than that bound).
                "resources": self.gpu_resources(
                    gpus, CPU_PER_RANK * gpus, self.s.memory_bytes, self.s.build_memory_bytes
                ),
                "securityContext": self.container_security(),
                "volumeMounts": [
                    {"name": "models", "mountPath": str(MOUNT)},
                    {"name": "shm", "mountPath": "/dev/shm"},
                ],
            }
            for step in self.s.build
        ]
        labels = self.component("build")
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            # Keyed by its commands: a changed plan is a new Job (a Job's pod template is immutable).
            "metadata": _meta(f"{self.name}-build-{digest}", labels),
            "spec": {
                "backoffLimit": 1,
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "restartPolicy": "Never",
                        "securityContext": self.pod_security(),
                        "affinity": self.node_affinity(),
                        "automountServiceAccountToken": False,
                        # Steps run in order: all but the last as init containers.
                        "initContainers": steps[:-1],
                        "containers": steps[-1:],
                        "volumes": [
                            {"name": "models", "persistentVolumeClaim": {"claimName": self.pvc_name}},
                            {
                                "name": "shm",
                                "emptyDir": {"medium": "Memory", "sizeLimit": _quantity(self.shm_bytes)},
                            },
                        ],
                    },
                },
            },
        }

    # -- the serving pod

    def guard(self) -> Obj:
        args = [
            "deploy",
            "engine-guard",
            "--manifest",
            str(self.s.wait_for),
            "--ranks",
            str(self.s.ranks_per_pod),
        ]
        if self.s.repo is not None:
            args += ["--repo", str(self.s.repo)]
        return {
            "name": "engine-guard",
            "image": self.req.image,
            "command": ["swallow-trt"],
            "args": args,
            "env": self.env(serving=True),
            # The guard reads the GPUs' SM, so it holds the same GPUs the server will.
            "resources": {"limits": {"nvidia.com/gpu": str(self.s.ranks_per_pod)}},
            "securityContext": self.container_security(),
            "volumeMounts": [{"name": "models", "mountPath": str(MOUNT), "readOnly": True},
                             {"name": "scratch", "mountPath": "/scratch"}],
        }  # fmt: skip

    def ports(self) -> list[Obj]:
        if self.s.runtime == "pytorch":
            return [{"name": "openai", "containerPort": OPENAI_PORT, "protocol": "TCP"}]
        return [
            {"name": "openai", "containerPort": OPENAI_PORT, "protocol": "TCP"},
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": signals.METRICS_PORT_NAME, "containerPort": METRICS_PORT, "protocol": "TCP"},
        ]

    def probes(self) -> Obj:
        if self.s.runtime == "pytorch":
            # trtllm-serve: /health once the engine is up. Liveness only asks that the port accepts
            # connections, so a server busy with long generations is never restarted.
            return {
                "startupProbe": {"httpGet": {"path": "/health", "port": "openai"}, "periodSeconds": 10,
                                 "timeoutSeconds": 5, "failureThreshold": STARTUP_BUDGET_S // 10},
                "readinessProbe": {"httpGet": {"path": "/health", "port": "openai"}, "periodSeconds": 10,
                                   "timeoutSeconds": 5, "failureThreshold": 3},
                "livenessProbe": {"tcpSocket": {"port": "openai"}, "periodSeconds": 20, "timeoutSeconds": 10,
                                  "failureThreshold": 6},
            }  # fmt: skip
        return {
            # Triton answers /v2/health/ready once every model is loaded: the engine load can take minutes.
            "startupProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 10,
                             "timeoutSeconds": 5, "failureThreshold": STARTUP_BUDGET_S // 10},
            # The API's /health is 200 only while Triton reports tensorrt_llm ready (a ModelReady call
            # over gRPC) and 503 during a restart by serve's watcher: it covers both servers.
            "readinessProbe": {"httpGet": {"path": "/health", "port": "openai"}, "periodSeconds": 10,
                               "timeoutSeconds": 5, "failureThreshold": 3},
            # /version is answered by the API's event loop alone (no call to Triton), so a busy or
            # restarting Triton never fails it; serve itself restarts a dead Triton and exits when it
            # gives up, which restarts the container.
            "livenessProbe": {"httpGet": {"path": "/version", "port": "openai"}, "periodSeconds": 20,
                              "timeoutSeconds": 10, "failureThreshold": 6},
        }  # fmt: skip

    def server_container(self, argv: list[str], *, serving: bool = True) -> Obj:
        env = self.env(serving=True)
        if serving and self.s.runtime == "engine":
            env.append(
                {
                    "name": "SWALLOW_TRT_API_KEY",
                    "valueFrom": {"secretKeyRef": {"name": self.api_key_secret, "key": "api-key"}},
                }
            )
        c: Obj = {
            "name": "server",
            "image": self.req.image,
            "command": ["swallow-trt"],
            "args": argv,
            "env": env,
            "resources": self.gpu_resources(
                self.s.ranks_per_pod, CPU_PER_RANK * self.s.ranks_per_pod + CPU_API, self.s.memory_bytes
            ),
            "securityContext": self.container_security(),
            "volumeMounts": [
                {"name": "models", "mountPath": str(MOUNT), "readOnly": True},
                {"name": "shm", "mountPath": "/dev/shm"},
                {"name": "scratch", "mountPath": "/scratch"},
                {"name": "tmp", "mountPath": "/tmp"},
            ],
        }
        if serving:
            c["ports"] = self.ports()
            c.update(self.probes())
            # Let the Services drop the pod before serve is told to stop: no new request lands on it.
            c["lifecycle"] = {"preStop": {"sleep": {"seconds": 10}}}
        return c

    def pod_spec(self, containers: list[Obj], *, account: str | None = None) -> Obj:
        spec: Obj = {
            "terminationGracePeriodSeconds": self.s.grace_s,
            "securityContext": self.pod_security(),
            "affinity": self.node_affinity(),
            "initContainers": [self.guard()],
            "containers": containers,
            "volumes": [
                {"name": "models", "persistentVolumeClaim": {"claimName": self.pvc_name, "readOnly": True}},
                {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": _quantity(self.shm_bytes)}},
                {"name": "scratch", "emptyDir": {}},
                {"name": "tmp", "emptyDir": {}},
            ],
        }
        if account is None:
            spec["automountServiceAccountToken"] = False
        else:
            spec["serviceAccountName"] = account
        return spec

    def pod_labels(self, role: str | None = None) -> dict[str, str]:
        labels = {**self.component("server"), signals.PICKER_ENGINE_LABEL: self.engine_label}
        if role is not None:
            labels["swallow-trt/role"] = role
        return labels

    def deployment(self) -> Obj:
        labels = self.pod_labels()
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta(self.name, self.component("server")),
            "spec": {
                "replicas": self.req.replicas,
                "selector": {"matchLabels": self.server_selector},
                # A new pod is ready before an old one goes: capacity stays, streams finish (grace period).
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": self.pod_spec([self.server_container(list(self.s.serve))]),
                },
            },
        }

    @property
    def launcher_account(self) -> str:
        return f"{self.name}-launcher"

    def leader_argv(self) -> list[str]:
        """The leader: ``deploy leader`` starts every rank across the group (rank 0 here) and the API."""
        return ["deploy", "leader", *self.s.serve[1:], "--gpus-per-node", str(self.s.ranks_per_pod)]

    def leaderworkerset(self) -> Obj:
        leader = self.pod_labels("leader")
        worker = self.pod_labels("worker")
        # Workers only host ranks the leader starts in them (`kubectl exec`): they wait for that.
        worker_container = self.server_container(["deploy", "worker"], serving=False)
        return {
            "apiVersion": "leaderworkerset.x-k8s.io/v1",
            "kind": "LeaderWorkerSet",
            "metadata": _meta(self.name, self.component("server")),
            "spec": {
                "replicas": self.req.replicas,
                "startupPolicy": "LeaderCreated",
                "rolloutStrategy": {
                    "type": "RollingUpdate",
                    "rollingUpdateConfiguration": {"maxSurge": 1, "maxUnavailable": 0},
                },
                "leaderWorkerTemplate": {
                    "size": self.s.nodes,
                    # One rank lost is the whole engine lost: restart the group together.
                    "restartPolicy": "RecreateGroupOnPodRestart",
                    "leaderTemplate": {
                        "metadata": {"labels": leader},
                        "spec": self.pod_spec(
                            [self.server_container(self.leader_argv())], account=self.launcher_account
                        ),
                    },
                    "workerTemplate": {
                        "metadata": {"labels": worker},
                        "spec": self.pod_spec([worker_container]),
                    },
                },
            },
        }

    def launcher_rbac(self) -> list[Manifest]:
        """What `kubectl exec` as MPI's remote-shell agent needs, and nothing more: find the group's
        pods and exec into them, in this namespace."""
        labels = self.component("launcher")
        return [
            Manifest("launcher-serviceaccount.yaml", {"apiVersion": "v1", "kind": "ServiceAccount",
                     "metadata": _meta(self.launcher_account, labels)}),
            Manifest("launcher-role.yaml", {
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": _meta(self.launcher_account, labels),
                "rules": [
                    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
                    {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]},
                ],
            }),
            Manifest("launcher-rolebinding.yaml", {
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": _meta(self.launcher_account, labels),
                "subjects": [{"kind": "ServiceAccount", "name": self.launcher_account,
                              "namespace": self.req.namespace}],
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": self.launcher_account},
            }),
        ]  # fmt: skip

    # -- services, disruption, monitoring

    def services(self) -> list[Manifest]:
        def svc(suffix: str, ports: list[Obj]) -> Obj:
            return {"apiVersion": "v1", "kind": "Service",
                    "metadata": _meta(f"{self.name}-{suffix}", self.component("server")),
                    "spec": {"selector": self.serving_selector, "ports": ports}}  # fmt: skip

        out = [
            Manifest("service-openai.yaml", svc("openai", [
                {"name": "openai", "port": OPENAI_PORT, "targetPort": "openai", "protocol": "TCP",
                 "appProtocol": "http"}])),
        ]  # fmt: skip
        if self.s.runtime == "engine":
            out += [
                Manifest("service-grpc.yaml", svc("grpc", [
                    {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP",
                     "appProtocol": "kubernetes.io/h2c"}])),
                Manifest("service-metrics.yaml", svc("metrics", [
                    {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"}])),
            ]  # fmt: skip
        return out

    def pdb(self) -> Obj:
        return {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": _meta(self.name, self.component("server")),
            # One pod at a time: a drain never takes two replicas (or two groups) at once.
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": self.server_selector}},
        }

    def metrics_port(self) -> str:
        return signals.METRICS_PORT_NAME if self.s.runtime == "engine" else "openai"

    def pod_monitor(self) -> Obj:
        return {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PodMonitor",
            # release: prometheus is kube-prometheus-stack's default selector (as Triton's tutorial sets).
            "metadata": _meta(self.name, {**self.component("server"), "release": "prometheus"}),
            "spec": {
                "selector": {"matchLabels": self.serving_selector},
                "podMetricsEndpoints": [
                    {"port": self.metrics_port(), "path": signals.METRICS_PATH, "interval": "6s"}
                ],
            },
        }

    def rules(self) -> tuple[signals.RecordingRule, ...]:
        return signals.RECORDING_RULES if self.s.runtime == "engine" else signals.TRTLLM_SERVE_RULES

    def prometheus_rule(self) -> Obj:
        return {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": _meta(self.name, {**self.component("server"), "release": "prometheus"}),
            "spec": {
                "groups": [
                    {
                        "name": signals.RULE_GROUP,
                        "interval": signals.RULE_INTERVAL,
                        "rules": [{"record": r.record, "expr": r.expr} for r in self.rules()],
                    }
                ]
            },
        }

    def scale_target(self) -> Obj:
        if self.s.multi_node:
            return {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet", "name": self.name}
        return {"apiVersion": "apps/v1", "kind": "Deployment", "name": self.name}

    @property
    def max_replicas(self) -> int:
        return self.req.max_replicas or 2 * self.req.replicas

    def targets(self) -> list[tuple[signals.RecordingRule, str]]:
        """(recorded series, per-pod target) the autoscalers hold: the tutorial's 1 for the ratio."""
        return [
            (r, "1" if r is signals.QUEUE_COMPUTE_RATIO else str(self.s.waiting_target)) for r in self.rules()
        ]

    def hpa(self) -> Obj:
        return {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": _meta(self.name, self.component("autoscaler")),
            "spec": {
                "scaleTargetRef": self.scale_target(),
                "minReplicas": self.req.replicas,
                "maxReplicas": self.max_replicas,
                "metrics": [
                    {
                        "type": "Pods",
                        "pods": {
                            "metric": {"name": rule.record},
                            "target": {"type": "AverageValue", "averageValue": target},
                        },
                    }
                    for rule, target in self.targets()
                ],
            },
        }

    def scaled_object(self) -> Obj:
        pods = f"{self.name}-.*"
        return {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": _meta(self.name, self.component("autoscaler")),
            "spec": {
                "scaleTargetRef": self.scale_target(),
                "minReplicaCount": self.req.replicas,
                "maxReplicaCount": self.max_replicas,
                "triggers": [
                    {
                        "type": "prometheus",
                        "name": rule.record.replace(":", "-").replace("_", "-"),
                        "metricType": "AverageValue",
                        "metadata": {
                            "serverAddress": self.req.prometheus_url,
                            "query": signals.keda_query(rule, self.req.namespace, pods),
                            "threshold": target,
                        },
                    }
                    for rule, target in self.targets()
                ],
            },
        }

    # -- routing

    @property
    def picker(self) -> str:
        return f"{self.name}-epp"

    def picker_config(self) -> Obj:
        extractor: Obj = {"defaultEngine": self.engine_label}
        if self.s.runtime == "engine":
            extractor["engineConfigs"] = [signals.PICKER.engine_config()]
        source: Obj = {"scheme": "http", "path": signals.METRICS_PATH}
        if self.s.runtime == "engine":
            # Triton publishes the nv_trt_llm_* families on its metrics port, not on the pool's target
            # port (the OpenAI API): the picker's metrics source is pointed there.
            source["port"] = METRICS_PORT
        return {
            "apiVersion": "llm-d.ai/v1alpha1",
            "kind": "EndpointPickerConfig",
            "plugins": [
                {"type": "queue-scorer"},
                {"type": "kv-cache-utilization-scorer"},
                {"type": "prefix-cache-scorer"},
                {"type": "metrics-data-source", "parameters": source},
                {"type": "core-metrics-extractor", "parameters": extractor},
            ],
            "schedulingProfiles": [
                {
                    "name": "default",
                    "plugins": [
                        {"pluginRef": "queue-scorer", "weight": 2},
                        {"pluginRef": "kv-cache-utilization-scorer", "weight": 2},
                        {"pluginRef": "prefix-cache-scorer", "weight": 3},
                    ],
                }
            ],
        }

    def gateway_objects(self) -> list[Manifest]:
        import yaml

        labels = self.component("endpoint-picker")
        selector = {"app.kubernetes.io/instance": self.name, "app.kubernetes.io/component": "endpoint-picker"}
        config = str(yaml.safe_dump(self.picker_config(), sort_keys=False))
        pool = {
            "apiVersion": "inference.networking.k8s.io/v1",
            "kind": "InferencePool",
            "metadata": _meta(self.name, self.component("server")),
            "spec": {
                "selector": {"matchLabels": self.serving_selector},
                "targetPorts": [{"number": OPENAI_PORT}],
                "appProtocol": "http",
                # FailOpen: the gateway still routes (without load awareness) if the picker is down.
                "endpointPickerRef": {"name": self.picker, "port": {"number": PICKER_GRPC_PORT},
                                      "failureMode": "FailOpen"},
            },
        }  # fmt: skip
        picker = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta(self.picker, labels),
            "spec": {
                "replicas": 1,
                # One active picker (its prefix-cache state is per process): replace, never overlap.
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": self.picker,
                        "terminationGracePeriodSeconds": 130,
                        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [{
                            "name": "epp",
                            "image": PICKER_IMAGE,
                            "args": ["--pool-name", self.name, "--pool-namespace", self.req.namespace,
                                     "--pool-group", "inference.networking.k8s.io",
                                     "--config-file", f"/config/{PICKER_CONFIG}",
                                     "--grpc-health-port", str(PICKER_HEALTH_PORT),
                                     "--tracing=false", "--metrics-endpoint-auth=false"],
                            "env": [
                                {"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            ],
                            "ports": [
                                {"name": "grpc", "containerPort": PICKER_GRPC_PORT},
                                {"name": "grpc-health", "containerPort": PICKER_HEALTH_PORT},
                                {"name": "metrics", "containerPort": PICKER_METRICS_PORT},
                            ],
                            "livenessProbe": {"grpc": {"port": PICKER_HEALTH_PORT, "service": "inference-extension"},
                                              "initialDelaySeconds": 5, "periodSeconds": 10},
                            "readinessProbe": {"grpc": {"port": PICKER_HEALTH_PORT, "service": "inference-extension"},
                                               "periodSeconds": 2},
                            "resources": {"requests": {"cpu": "2", "memory": "2Gi"}, "limits": {"memory": "8Gi"}},
                            "securityContext": self.container_security(),
                            "volumeMounts": [{"name": "config", "mountPath": "/config", "readOnly": True}],
                        }],
                        "volumes": [{"name": "config", "configMap": {"name": self.picker}}],
                    },
                },
            },
        }  # fmt: skip
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(self.picker, labels),
            "spec": {
                "selector": selector,
                "ports": [
                    {"name": "grpc-ext-proc", "port": PICKER_GRPC_PORT, "targetPort": "grpc", "protocol": "TCP",
                     "appProtocol": "kubernetes.io/h2c"},
                    {"name": "http-metrics", "port": PICKER_METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
                ],
            },
        }  # fmt: skip
        read = ["get", "watch", "list"]
        role = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(self.picker, labels),
            "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": read},
                {"apiGroups": ["inference.networking.k8s.io"], "resources": ["inferencepools"], "verbs": read},
                {"apiGroups": ["inference.networking.x-k8s.io", "llm-d.ai"],
                 "resources": ["inferenceobjectives", "inferencemodelrewrites"], "verbs": read},
            ],
        }  # fmt: skip
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(self.picker, labels),
            "subjects": [{"kind": "ServiceAccount", "name": self.picker, "namespace": self.req.namespace}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": self.picker},
        }
        route = {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": _meta(self.name, self.component("server")),
            "spec": {
                "parentRefs": [{"name": self.req.gateway_name}],
                "rules": [{
                    "matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
                    "backendRefs": [{"group": "inference.networking.k8s.io", "kind": "InferencePool",
                                     "name": self.name}],
                    # A stream may last as long as the grace period allows.
                    "timeouts": {"request": f"{self.s.grace_s}s"},
                }],
            },
        }  # fmt: skip
        return [
            Manifest("inferencepool.yaml", pool),
            Manifest(
                "picker-configmap.yaml",
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": _meta(self.picker, labels),
                    "data": {PICKER_CONFIG: config},
                },
            ),
            Manifest("picker-deployment.yaml", picker),
            Manifest("picker-service.yaml", service),
            Manifest(
                "picker-serviceaccount.yaml",
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(self.picker, labels)},
            ),
            Manifest("picker-role.yaml", role),
            Manifest("picker-rolebinding.yaml", binding),
            Manifest("httproute.yaml", route),
        ]

    # -- security

    def network_policy(self) -> Obj:
        def ns(name: str) -> Obj:
            return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}

        clients: list[Obj] = (
            [ns(self.req.client_namespace)] if self.req.client_namespace else [{"podSelector": {}}]
        )
        client_ports = [{"port": "openai", "protocol": "TCP"}]
        if self.s.runtime == "engine":
            client_ports.append({"port": "grpc", "protocol": "TCP"})
        scrapers: list[Obj] = [ns(self.req.monitoring_namespace)]
        if self.req.gateway:
            # The picker reads the same metrics port to route.
            scrapers.append({"podSelector": {"matchLabels": {
                "app.kubernetes.io/instance": self.name, "app.kubernetes.io/component": "endpoint-picker"}}})  # fmt: skip
        ingress = [
            {"from": clients, "ports": client_ports},
            {"from": scrapers, "ports": [{"port": self.metrics_port(), "protocol": "TCP"}]},
        ]
        if self.req.gateway and self.req.client_namespace is None:
            pass  # the gateway's pods sit in this namespace's podSelector {} rule
        if self.s.multi_node:
            # The ranks of a group talk MPI/NCCL on ports they choose at start-up.
            ingress.append({"from": [{"podSelector": {"matchLabels": self.server_selector}}]})
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _meta(self.name, self.component("server")),
            "spec": {
                "podSelector": {"matchLabels": self.server_selector},
                "policyTypes": ["Ingress"],
                "ingress": ingress,
            },
        }

    # -- all of it

    def manifests(self) -> tuple[Manifest, ...]:
        out = [Manifest("pvc.yaml", self.pvc())]
        job = self.build_job()
        if job is not None:
            out.append(Manifest("build-job.yaml", job))
        if self.s.multi_node:
            out.append(Manifest("leaderworkerset.yaml", self.leaderworkerset()))
            out += self.launcher_rbac()
        else:
            out.append(Manifest("deployment.yaml", self.deployment()))
        out += self.services()
        out.append(Manifest("pdb.yaml", self.pdb()))
        out.append(Manifest("podmonitor.yaml", self.pod_monitor()))
        out.append(Manifest("prometheusrule.yaml", self.prometheus_rule()))
        if self.req.autoscaler == "hpa":
            out.append(Manifest("hpa.yaml", self.hpa()))
        elif self.req.autoscaler == "keda":
            out.append(Manifest("scaledobject.yaml", self.scaled_object()))
        if self.req.gateway:
            out += self.gateway_objects()
        out.append(Manifest("networkpolicy.yaml", self.network_policy()))
        return tuple(out)


def build_deployment(req: DeployRequest) -> Deployment:
    """Validate ``req``, plan, and build every object (nothing is written)."""
    _check_request(req)
    plan: Plan | None = None
    if req.repo is not None:
        shape = shape_from_repo(req)
    else:
        shape, plan = shape_from_plan(req)
    return Deployment(req, shape, Builder(req, shape).manifests(), plan)


def write_deployment(deployment: Deployment, out: Path) -> list[Path]:
    """Write the directory: built in a temporary sibling, then renamed over ``out``. An existing ``out``
    is replaced only if this tool wrote it (its kustomization.yaml says so)."""
    import os
    import shutil

    from swallow_trt.checks import output_dir

    output_dir(out)
    out = out.expanduser()
    if out.exists() and any(out.iterdir()):
        marker = out / "kustomization.yaml"
        if not marker.is_file() or MARKER not in marker.read_text(errors="replace"):
            raise UsageError(
                f"--out {str(out)!r} exists and was not written by `swallow-trt deploy k8s`",
                "pass an empty or new directory",
            )
    files = deployment.files()
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, text in files.items():
        body = (MARKER + "\n" + text) if name == "kustomization.yaml" else text
        with (tmp / name).open("w", encoding="utf-8") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    return [out / name for name in files]


MARKER = "# written by swallow-trt deploy k8s"


def summary(deployment: Deployment) -> dict[str, Any]:
    """The ``--json`` listing: the objects and what shape they serve."""
    s = deployment.shape
    return {
        "name": s.name,
        "namespace": deployment.request.namespace,
        "runtime": s.runtime,
        "workload": "LeaderWorkerSet" if s.multi_node else "Deployment",
        "replicas": deployment.request.replicas,
        "ranks": s.world,
        "nodes_per_replica": s.nodes,
        "gpus_per_pod": s.ranks_per_pod,
        "gpu_products": list(s.products),
        "repository": str(s.repo) if s.repo is not None else None,
        "build_job": any(m.kind == "Job" for m in deployment.manifests),
        "notes": deployment.notes,
        "objects": [
            {"file": m.file, "apiVersion": m.api_version, "kind": m.kind, "name": m.name}
            for m in deployment.manifests
        ],
        "files": sorted(deployment.files()),
    }
