"""``deploy k8s``: every object it writes validates strictly (unknown fields rejected) against the
Kubernetes 1.31-1.36 schemas that kubernetes-validate ships, every custom resource against its upstream
CRD (tests/data/crds, see the README there), and every directory renders with ``kubectl kustomize``.

The matrix: each shipped target x (8b, 70b, Swallow-MX, a Qwen3-Swallow, GPT-OSS-Swallow on the PyTorch
runtime) x (1 replica, 3 replicas, a two-node layout) is built, validated against Kubernetes 1.36 and its
CRDs, and rendered; a representative set is validated against every version 1.31-1.36.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from swallow_trt.builders.plan import PlanRequest
from swallow_trt.cli.main import app
from swallow_trt.deploy import k8s, signals
from swallow_trt.deploy.k8s import Deployment, DeployRequest, build_deployment
from swallow_trt.errors import SwallowTrtError, UsageError
from swallow_trt.profiles import get_target

jsonschema = pytest.importorskip("jsonschema")
kv_resources = pytest.importorskip("kubernetes_validate")

CRDS = Path(__file__).resolve().parents[1] / "data" / "crds"
VERSIONS = ("1.31", "1.32", "1.33", "1.34", "1.35", "1.36")
MATRIX_VERSION = "1.36"
KUBECTL = shutil.which("kubectl")
TARGETS = ("ampere", "ampere-sm86", "ada", "hopper", "h100x4")
MODELS = {
    "8b": ("8b", None),
    "70b": ("70b", None),
    "swallow-mx": ("tokyotech-llm/Swallow-MX-8x7b-NVE-v0.1", None),
    "qwen3-swallow": ("qwen3-8b", None),
    "gpt-oss-swallow": ("gpt-oss-20b", "pytorch"),
}
CR_FILES = {
    ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"): "leaderworkerset.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject.json",
    ("inference.networking.k8s.io/v1", "InferencePool"): "inferencepool.json",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "httproute.json",
}
METADATA_KEYS = {"name", "namespace", "labels", "annotations"}


# --- validators ---------------------------------------------------------------------------------


@functools.cache
def _k8s_registry(version: str) -> tuple[Path, Any]:
    import referencing

    base = Path(kv_resources.__file__).parent / "kubernetes-json-schema" / f"v{version}.0-local-strict"
    defs = json.loads((base / "_definitions.json").read_text())
    resource = referencing.Resource.from_contents(defs)
    return base, referencing.Registry().with_resource(defs["$id"], resource)


@functools.cache
def _k8s_validator(version: str, api_version: str, kind: str) -> Any:
    base, registry = _k8s_registry(version)
    group_version = api_version.split("/")
    group = group_version[0].split(".")[0] if len(group_version) == 2 else ""
    name = (
        f"{kind.lower()}-{group}-{group_version[-1]}.json" if group else f"{kind.lower()}-{api_version}.json"
    )
    schema = json.loads((base / name).read_text())
    return jsonschema.Draft202012Validator(schema, registry=registry)


@functools.cache
def _pod_template_validator(version: str) -> Any:
    _, registry = _k8s_registry(version)
    schema = {"$ref": "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.api.core.v1.PodTemplateSpec"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _structural(node: Any) -> Any:
    """An openAPIV3Schema as JSON Schema, strict as the API server's field validation: an object with
    declared properties admits no others (unless x-kubernetes-preserve-unknown-fields), int-or-string
    is either, nullable admits null."""
    if isinstance(node, list):
        return [_structural(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _structural(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable"):
        out.pop("nullable")
        if "type" in out:
            out["type"] = [out["type"], "null"]
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@functools.cache
def _crd_validator(file: str) -> Any:
    document = json.loads((CRDS / file).read_text())
    return jsonschema.Draft202012Validator(_structural(document["openAPIV3Schema"]))


def _errors(validator: Any, obj: Any, where: str) -> list[str]:
    return [
        f"{where}: {'.'.join(map(str, e.absolute_path))}: {e.message[:300]}"
        for e in validator.iter_errors(obj)
    ]


def validate(obj: dict[str, Any], version: str = MATRIX_VERSION) -> list[str]:
    """Every problem with one object: built-ins against Kubernetes ``version``, custom resources against
    their CRD (and LeaderWorkerSet pod templates against Kubernetes' PodTemplateSpec)."""
    where = f"{obj['kind']}/{obj['metadata']['name']}"
    key = (obj["apiVersion"], obj["kind"])
    if key not in CR_FILES:
        return _errors(_k8s_validator(version, *key), obj, f"{where} (k8s {version})")
    problems = _errors(_crd_validator(CR_FILES[key]), obj, f"{where} (CRD)")
    extra = set(obj["metadata"]) - METADATA_KEYS
    problems += [f"{where}: metadata.{k} is not expected" for k in sorted(extra)]
    problems += _errors(
        _k8s_validator(version, "v1", "ConfigMap"), _as_configmap_meta(obj), f"{where} metadata"
    )
    if obj["kind"] == "LeaderWorkerSet":
        template = obj["spec"]["leaderWorkerTemplate"]
        for role in ("leaderTemplate", "workerTemplate"):
            problems += _errors(
                _pod_template_validator(version), template[role], f"{where} {role} (k8s {version})"
            )
    return problems


def _as_configmap_meta(obj: dict[str, Any]) -> dict[str, Any]:
    # Labels and names checked with ObjectMeta's schema (through an empty ConfigMap that carries them).
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}


# --- building ------------------------------------------------------------------------------------


def _fitting_tp(model: str, runtime: str | None, target: str, qformat: str | None) -> int:
    for tp in (1, 2, 4, 8):
        try:
            build_deployment(_request(model, runtime, target, qformat, tp=tp, pp=1, per_node=8))
            return tp
        except SwallowTrtError:
            continue
    raise AssertionError(f"no TP fits {model} on {target}")


def _qformat(key: str, target: str) -> str | None:
    # ModelOpt has no AWQ for Mixtral: on Ampere-sm86 (default int4_awq) it takes int8 weight-only.
    return "int8_wo" if key == "swallow-mx" and target == "ampere-sm86" else None


def _request(model: str, runtime: str | None, target: str, qformat: str | None, *, tp: int, pp: int,
             per_node: int | None, replicas: int = 1, **more: Any) -> DeployRequest:  # fmt: skip
    plan = PlanRequest(model=model, target=target, tp=tp, pp=pp, qformat=qformat, runtime=runtime or "auto")
    return DeployRequest(plan=plan, replicas=replicas, gpus_per_node=per_node, **more)


LAYOUTS = ("1-replica", "3-replicas", "two-nodes")


def matrix_case(target: str, key: str, layout: str) -> Deployment:
    model, runtime = MODELS[key]
    qformat = _qformat(key, target)
    tp = _fitting_tp(model, runtime, target, qformat)
    per_node = max(tp, get_target(target).gpu_count)
    # Alternate the autoscaler and the gateway over the matrix so each is rendered for every target.
    extra: dict[str, Any] = {"autoscaler": "keda", "gateway": True} if layout != "1-replica" else {}
    if layout == "two-nodes":
        # The fitting TP on each node, two pipeline stages: twice the ranks a node holds.
        return build_deployment(_request(model, runtime, target, qformat, tp=tp, pp=2, per_node=tp, **extra))
    replicas = 3 if layout == "3-replicas" else 1
    return build_deployment(
        _request(model, runtime, target, qformat, tp=tp, pp=1, per_node=per_node, replicas=replicas, **extra)
    )


CASES = [(t, k, lay) for t in TARGETS for k in MODELS for lay in LAYOUTS]
# kubectl kustomize costs ~0.2 s a directory here (and one kustomization over all 75 took 38 s): every
# case is validated, and one case per target x layout is rendered, the model rotating so that each
# model is rendered in three layouts.
RENDERED = {
    (t, list(MODELS)[(ti + li) % len(MODELS)], lay)
    for ti, t in enumerate(TARGETS)
    for li, lay in enumerate(LAYOUTS)
}


@pytest.fixture(scope="module")
def matrix() -> dict[tuple[str, str, str], Deployment]:
    """Every case built once (the version test reuses some)."""
    return {case: matrix_case(*case) for case in CASES}


def kustomize(directory: Path) -> list[dict[str, Any]]:
    assert KUBECTL is not None
    done = subprocess.run([KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


needs_kubectl = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl is not installed (kubectl kustomize renders)"
)


# --- the matrix ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "key", "layout"), CASES)
def test_matrix_validates_and_renders(
    target: str, key: str, layout: str, matrix: dict[tuple[str, str, str], Deployment], tmp_path: Path
) -> None:
    deployment = matrix[(target, key, layout)]
    assert deployment.shape.multi_node == (layout == "two-nodes")
    assert deployment.shape.runtime == ("pytorch" if key == "gpt-oss-swallow" else "engine")
    problems = [p for m in deployment.manifests for p in validate(m.obj)]
    assert problems == []
    kinds = {m.kind for m in deployment.manifests}
    workload = "LeaderWorkerSet" if layout == "two-nodes" else "Deployment"
    assert {workload, "PersistentVolumeClaim", "Job", "PodDisruptionBudget", "PodMonitor", "PrometheusRule",
            "NetworkPolicy", "Service"} <= kinds  # fmt: skip
    if (target, key, layout) not in RENDERED:
        return
    if KUBECTL is None:
        pytest.skip("kubectl is not installed: rendering with kubectl kustomize not checked")
    for name, text in deployment.files().items():
        (tmp_path / name).write_text(text)
    rendered = kustomize(tmp_path)
    assert sorted(d["kind"] for d in rendered) == sorted(m.kind for m in deployment.manifests)
    assert {d["metadata"]["namespace"] for d in rendered} == {"default"}


@pytest.mark.parametrize("version", VERSIONS)
def test_representative_objects_validate_on_every_kubernetes_version(
    version: str, matrix: dict[tuple[str, str, str], Deployment]
) -> None:
    cases = [matrix[("h100x4", "70b", "two-nodes")], matrix[("hopper", "8b", "3-replicas")],
             matrix[("ada", "gpt-oss-swallow", "1-replica")],
             build_deployment(_request("8b", None, "hopper", None, tp=1, pp=1, per_node=1, autoscaler="hpa",
                                       gateway=True, client_namespace="gateway", storage_class="nfs"))]  # fmt: skip
    seen = {m.kind for d in cases for m in d.manifests}
    assert {"Deployment", "LeaderWorkerSet", "Job", "HorizontalPodAutoscaler", "ScaledObject", "InferencePool",
            "HTTPRoute", "Role", "RoleBinding", "ServiceAccount", "ConfigMap"} <= seen  # fmt: skip
    assert [p for d in cases for m in d.manifests for p in validate(m.obj, version)] == []


# --- the validators can fail ----------------------------------------------------------------------


def _find(deployment: Deployment, kind: str) -> dict[str, Any]:
    return next(m.obj for m in deployment.manifests if m.kind == kind)


def test_validators_reject_unknown_fields_and_wrong_types() -> None:
    import copy

    d = matrix_case("h100x4", "70b", "two-nodes")
    dep = copy.deepcopy(_find(build_deployment(_request("8b", None, "hopper", None, tp=1, pp=1, per_node=1)),
                              "Deployment"))  # fmt: skip
    dep["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    assert any("livenesProbe" in p for p in validate(dep))
    lws = copy.deepcopy(_find(d, "LeaderWorkerSet"))
    lws["spec"]["leaderWorkerTemplate"]["sizee"] = 2
    lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]["imagee"] = "x"
    problems = validate(lws)
    assert any("sizee" in p for p in problems)
    assert any("imagee" in p for p in problems)
    pool = copy.deepcopy(_find(d, "InferencePool"))
    pool["spec"]["targetPorts"] = [{"number": 70000}]
    assert any("targetPorts" in p for p in validate(pool))
    so = copy.deepcopy(_find(d, "ScaledObject"))
    so["spec"]["triggers"][0]["metadata"]["threshold"] = 1  # KEDA's metadata values are strings
    assert any("threshold" in p for p in validate(so))


# --- what the objects say ------------------------------------------------------------------------


def test_single_node_deployment_details() -> None:
    d = build_deployment(_request("70b", None, "h100x4", "fp8", tp=4, pp=1, per_node=None, replicas=2))
    dep = _find(d, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert dep["spec"]["replicas"] == 2
    assert server["resources"]["limits"]["nvidia.com/gpu"] == "4"
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms[0]["matchExpressions"] == [
        {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]}
    ]
    shm = next(v for v in pod["volumes"] if v["name"] == "shm")["emptyDir"]
    assert shm == {"medium": "Memory", "sizeLimit": "6Gi"}  # 2 GiB + 1 GiB per rank
    assert server["args"][:2] == ["serve", "--repo"]
    assert {p["name"]: p["containerPort"] for p in server["ports"]} == {
        "openai": 8080, "http": 8000, "grpc": 8001, "metrics": 8002}  # fmt: skip
    assert server["startupProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert server["readinessProbe"]["httpGet"] == {"path": "/health", "port": "openai"}
    assert server["livenessProbe"]["httpGet"] == {"path": "/version", "port": "openai"}
    key = next(e for e in server["env"] if e["name"] == "SWALLOW_TRT_API_KEY")
    assert key == {"name": "SWALLOW_TRT_API_KEY",
                   "valueFrom": {"secretKeyRef": {"name": f"{d.shape.name}-api-key", "key": "api-key"}}}  # fmt: skip
    assert not any(m.kind == "Secret" for m in d.manifests)  # keys are never written
    # Longer than the longest stream the plan allows at its decode floor.
    plan = d.plan
    assert plan is not None
    floor = max(g.decode_floor_batch_s for g in plan.gpus if g.fits) * plan.max_seq_len
    assert pod["terminationGracePeriodSeconds"] >= max(120, floor)
    guard = pod["initContainers"][0]
    assert guard["args"][:3] == ["deploy", "engine-guard", "--manifest"]
    assert guard["args"][3].endswith("/engine-h100x4/manifest.json")
    job = _find(d, "Job")
    steps = [c["args"][0] for c in job["spec"]["template"]["spec"]["initContainers"]]
    steps += [c["args"][0] for c in job["spec"]["template"]["spec"]["containers"]]
    assert steps == ["build", "package"]
    build_step = job["spec"]["template"]["spec"]["initContainers"][0]
    assert (
        build_step["resources"]["limits"]["memory"] == f"{-(-(plan.host.ram_bytes + 6 * 2**30) // 2**30)}Gi"
    )
    build_args = build_step["args"]
    assert build_args[build_args.index("--tp") + 1] == "4"
    assert "--fp8" not in build_args
    assert build_args[build_args.index("--qformat") + 1] == "fp8"
    hpa = _find(d, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": d.shape.name,
    }
    assert [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]] == [
        "triton:queue_compute:ratio", "triton:trt_llm_waiting_requests:sum"]  # fmt: skip
    assert hpa["spec"]["metrics"][0]["pods"]["target"] == {"type": "AverageValue", "averageValue": "1"}
    rule = _find(d, "PrometheusRule")["spec"]["groups"][0]["rules"]
    assert rule[0] == {"record": "triton:queue_compute:ratio", "expr": signals.QUEUE_COMPUTE_RATIO.expr}
    monitor = _find(d, "PodMonitor")["spec"]["podMetricsEndpoints"]
    assert monitor == [{"port": "metrics", "path": "/metrics", "interval": "6s"}]
    adapter = yaml.safe_load(d.files()["prometheus-adapter-values.yaml"])
    assert adapter == {"rules": {"custom": signals.adapter_rules()}}


def test_leaderworkerset_details() -> None:
    d = build_deployment(_request("70b", None, "h100x4", "fp8", tp=8, pp=1, per_node=4, autoscaler="keda"))
    assert (d.shape.nodes, d.shape.ranks_per_pod, d.shape.world) == (2, 4, 8)
    assert "deploy with --repo" in d.notes[0]  # the Job cannot build 8 ranks on a 4-GPU node today
    lws = _find(d, "LeaderWorkerSet")
    template = lws["spec"]["leaderWorkerTemplate"]
    assert template["size"] == 2
    leader = template["leaderTemplate"]["spec"]
    worker = template["workerTemplate"]["spec"]
    assert leader["containers"][0]["args"][:3] == ["deploy", "leader", "--repo"]
    assert leader["containers"][0]["args"][-2:] == ["--gpus-per-node", "4"]
    assert leader["serviceAccountName"] == f"{d.shape.name}-launcher"
    assert worker["containers"][0]["args"] == ["deploy", "worker"]
    assert worker["automountServiceAccountToken"] is False
    assert "ports" not in worker["containers"][0]
    assert worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"
    role = _find(d, "Role")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
                             {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}]  # fmt: skip
    so = _find(d, "ScaledObject")
    assert so["spec"]["scaleTargetRef"]["kind"] == "LeaderWorkerSet"
    query = so["spec"]["triggers"][0]["metadata"]["query"]
    assert query == signals.keda_query(signals.QUEUE_COMPUTE_RATIO, "default", f"{d.shape.name}-.*")
    for kind in ("Service", "PodMonitor"):
        selector = _find(d, kind)["spec"]["selector"]
        assert (selector.get("matchLabels") or selector)["swallow-trt/role"] == "leader"
    policy = _find(d, "NetworkPolicy")["spec"]["ingress"]
    assert policy[-1] == {"from": [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/instance": d.shape.name, "app.kubernetes.io/component": "server"}}}]}  # fmt: skip


def test_gateway_objects_route_on_tritons_metrics_port() -> None:
    d = build_deployment(_request("8b", None, "hopper", None, tp=1, pp=1, per_node=1, gateway=True,
                                  client_namespace="gateway-system"))  # fmt: skip
    pool = _find(d, "InferencePool")["spec"]
    assert pool["targetPorts"] == [{"number": 8080}]
    assert pool["endpointPickerRef"] == {"name": f"{d.shape.name}-epp", "port": {"number": 9002},
                                         "failureMode": "FailOpen"}  # fmt: skip
    route = _find(d, "HTTPRoute")["spec"]["rules"][0]["backendRefs"]
    assert route == [{"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": d.shape.name}]
    pod_labels = _find(d, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["llm-d.ai/engine-type"] == "triton-tensorrt-llm"
    config_map = next(m.obj for m in d.manifests if m.kind == "ConfigMap")
    config = yaml.safe_load(config_map["data"]["epp-config.yaml"])
    plugins = {p["type"]: p.get("parameters") for p in config["plugins"]}
    assert plugins["metrics-data-source"] == {"scheme": "http", "path": "/metrics", "port": 8002}
    assert plugins["core-metrics-extractor"] == {"defaultEngine": "triton-tensorrt-llm",
                                                 "engineConfigs": [signals.PICKER.engine_config()]}  # fmt: skip
    args = _find(d, "Deployment") and next(m.obj for m in d.manifests if m.file == "picker-deployment.yaml")
    argv = args["spec"]["template"]["spec"]["containers"][0]["args"]
    # The picker's per-metric flags are rejected at start-up since llm-d-router moved them into the config.
    assert not any("metric" in a and a.startswith("--total") for a in argv)
    policy = _find(d, "NetworkPolicy")["spec"]["ingress"]
    assert policy[0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway-system"}}}
    ]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/instance": d.shape.name,
            "app.kubernetes.io/component": "endpoint-picker"}}} in policy[1]["from"]  # fmt: skip


# EndpointPickerConfig field names (llm-d-router v0.10.0): apix/config/v1alpha1/endpointpickerconfig_types.go,
# pkg/epp/framework/plugins/datalayer/source/metrics/datasource.go (metricsDatasourceParams) and
# .../extractor/metrics/factories.go (modelServerExtractorParams, engineConfigParams).
PICKER_CONFIG_KEYS = {"apiVersion", "kind", "featureGates", "plugins", "schedulingProfiles", "dataLayer",
                      "flowControl", "requestHandler", "saturationDetector", "parser"}  # fmt: skip
PICKER_PLUGIN_KEYS = {"name", "type", "parameters"}
PICKER_PROFILE_PLUGIN_KEYS = {"pluginRef", "weight"}
PICKER_SOURCE_KEYS = {"scheme", "path", "port", "insecureSkipVerify", "caCertPath", "clientCertPath",
                      "clientKeyPath", "interval"}  # fmt: skip
PICKER_EXTRACTOR_KEYS = {"engineLabelKey", "defaultEngine", "engineConfigs"}
PICKER_ENGINE_KEYS = {"name", "queuedRequestsSpec", "runningRequestsSpec", "kvUsageSpec", "loraSpec",
                      "cacheInfoSpec", "cacheBlockSizeLabelName", "cacheNumBlocksLabelName",
                      "cacheBlockSizeSpec", "cacheNumBlocksSpec", "customMetrics"}  # fmt: skip


@pytest.mark.parametrize("key", ["8b", "gpt-oss-swallow"])
def test_picker_config_uses_only_upstream_field_names(key: str) -> None:
    model, runtime = MODELS[key]
    d = build_deployment(_request(model, runtime, "hopper", None, tp=1, pp=1, per_node=1, gateway=True))
    config = yaml.safe_load(
        next(m.obj for m in d.manifests if m.kind == "ConfigMap")["data"]["epp-config.yaml"]
    )
    assert set(config) <= PICKER_CONFIG_KEYS
    assert all(set(p) <= PICKER_PLUGIN_KEYS for p in config["plugins"])
    assert all(
        set(p) <= PICKER_PROFILE_PLUGIN_KEYS for s in config["schedulingProfiles"] for p in s["plugins"]
    )
    plugins = {p["type"]: p.get("parameters") or {} for p in config["plugins"]}
    assert set(plugins["metrics-data-source"]) <= PICKER_SOURCE_KEYS
    assert set(plugins["core-metrics-extractor"]) <= PICKER_EXTRACTOR_KEYS
    assert all(
        set(e) <= PICKER_ENGINE_KEYS for e in plugins["core-metrics-extractor"].get("engineConfigs", [])
    )
    refs = {p["pluginRef"] for s in config["schedulingProfiles"] for p in s["plugins"]}
    assert refs <= set(plugins)
    if runtime == "pytorch":  # trtllm-serve: metrics on the pool's own port, the picker's built-in engine
        assert "port" not in plugins["metrics-data-source"]
        assert plugins["core-metrics-extractor"] == {"defaultEngine": "trtllm-serve"}


def test_pytorch_runtime_serves_with_trtllm_serve() -> None:
    d = matrix_case("hopper", "gpt-oss-swallow", "1-replica")
    server = _find(d, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert server["args"][:3] == ["serve", "--runtime", "pytorch"]
    assert server["args"][server["args"].index("--http-port") + 1] == "8080"
    assert [p["name"] for p in server["ports"]] == ["openai"]
    assert server["livenessProbe"] == {"tcpSocket": {"port": "openai"}, "periodSeconds": 20,
                                       "timeoutSeconds": 10, "failureThreshold": 6}  # fmt: skip
    assert _find(d, "PodMonitor")["spec"]["podMetricsEndpoints"][0]["port"] == "openai"
    assert [m.file for m in d.manifests if m.kind == "Service"] == ["service-openai.yaml"]
    guard = _find(d, "Deployment")["spec"]["template"]["spec"]["initContainers"][0]["args"]
    assert guard[3].endswith("/build.json")
    assert "--repo" not in guard


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"replicas": 0}, "--replicas must be at least 1"),
        ({"namespace": "Bad_Namespace"}, "is not a DNS label"),
        ({"namespace": "a" * 64}, "is not a DNS label"),
        ({"autoscaler": "vpa"}, "unknown --autoscaler"),
        ({"gpus_per_node": 3}, "do not split evenly"),
        ({"max_replicas": 0}, "below --replicas"),
        ({"image": "has space"}, "not an image reference"),
    ],
)  # fmt: skip
def test_bad_requests_are_usage_errors(change: dict[str, Any], message: str) -> None:
    base = _request("70b", None, "h100x4", "fp8", tp=4, pp=1, per_node=None)
    from dataclasses import replace

    with pytest.raises(UsageError, match=message):
        build_deployment(replace(base, **change))


def test_layouts_that_do_not_fit_and_unknown_gpus_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="does not fit on H100-PCIE-80GB"):
        build_deployment(
            DeployRequest(
                plan=PlanRequest(model="70b", target="hopper", gpu="H100-PCIE", qformat="full_prec")
            )
        )
    with pytest.raises(UsageError, match="not part of target"):
        build_deployment(DeployRequest(plan=PlanRequest(model="8b", target="hopper", gpu="B200")))
    with pytest.raises(UsageError, match="needs --target"):
        build_deployment(DeployRequest(plan=PlanRequest(model="8b")))
    from swallow_trt.deploy.products import product_label

    with pytest.raises(UsageError, match=r"no nvidia\.com/gpu\.product label"):
        product_label("B200")
    assert product_label("RTX-4090") == "NVIDIA-GeForce-RTX-4090"


def test_cli_writes_lists_and_refuses(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    runner = CliRunner()
    out = tmp_path / "k8s"
    done = runner.invoke(
        app, ["deploy", "k8s", "--model", "8b", "--target", "hopper", "--out", str(out), "--json"]
    )
    assert done.exit_code == 0, done.output
    listing = json.loads(done.stdout)
    assert listing["workload"] == "Deployment"
    assert (out / "kustomization.yaml").is_file()
    assert sorted(p.name for p in out.iterdir()) == listing["files"]
    if KUBECTL is not None:  # the directory on its own, as `kubectl apply -k` reads it
        rendered = kustomize(out)
        assert sorted(d["kind"] for d in rendered) == sorted(o["kind"] for o in listing["objects"])
    # Rewriting the same directory replaces it; a directory this tool did not write is refused.
    assert (
        runner.invoke(
            app, ["deploy", "k8s", "--model", "8b", "--target", "hopper", "--out", str(out)]
        ).exit_code
        == 0
    )
    other = tmp_path / "other"
    other.mkdir()
    (other / "mine.txt").write_text("x")
    refused = runner.invoke(
        app, ["deploy", "k8s", "--model", "8b", "--target", "hopper", "--out", str(other)]
    )
    assert refused.exit_code == 2
    assert "was not written by" in refused.stderr
    dry = runner.invoke(app, ["deploy", "k8s", "--model", "8b", "--target", "hopper", "--dry-run", "--json"])
    assert dry.exit_code == 0
    assert set(json.loads(dry.stdout)["contents"]) == set(listing["files"])
    for argv, message in (
        (["--replicas", "0"], "--replicas must be at least 1"),
        (["--namespace", "Not_A_Label"], "not a DNS label"),
        (["--gpu", "B200"], "not part of target"),
    ):
        bad = runner.invoke(app, ["deploy", "k8s", "--model", "8b", "--target", "hopper", "--dry-run", *argv])
        assert bad.exit_code == 2
        assert message in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1


def test_dns_names_fit_every_object() -> None:
    assert (
        k8s.default_name("tokyotech-llm/Llama-3.1-Swallow-70B-Instruct-v0.3")
        == "llama-3-1-swallow-70b-instruct-v0-3"
    )
    assert k8s.default_name("tokyotech-llm/3B-thing") == "swallow-3b-thing"
    name = k8s.default_name("x/" + "a" * 80)
    assert len(name) <= 40
    assert k8s.DNS_LABEL.match(name)


def _packaged_repo(root: Path, world: int, manifest_gpu: str | None = "NVIDIA H100 80GB HBM3") -> Path:
    """What `package` leaves: an engine inside the repository, named relative to it."""
    engine = root / "tensorrt_llm" / "1" / "engine"
    engine.mkdir(parents=True)
    (engine / "config.json").write_text(json.dumps({"pretrained_config": {"mapping": {"world_size": world}}}))
    if manifest_gpu is not None:
        (engine / "manifest.json").write_text(
            json.dumps({"gpu": {"name": manifest_gpu, "sm": 90, "count": world}})
        )
    (root / "tensorrt_llm" / "config.pbtxt").write_text(
        'name: "tensorrt_llm"\nbackend: "tensorrtllm"\n'
        'parameters { key: "gpt_model_path" value { string_value: "tensorrt_llm/1/engine" } }\n'
    )
    return root


def test_packaged_repository_deploys_without_a_build_job(tmp_path: Path) -> None:
    pytest.importorskip("tritonclient")  # the repository's config.pbtxt is read with its protobuf messages
    repo = _packaged_repo(tmp_path / "swallow-70b", world=8)
    d = build_deployment(DeployRequest(plan=None, repo=repo, gpus_per_node=4, replicas=2))
    assert (d.shape.name, d.shape.nodes, d.shape.ranks_per_pod, d.shape.products) == (
        "swallow-70b", 2, 4, ("NVIDIA-H100-80GB-HBM3",))  # fmt: skip
    assert not any(m.kind == "Job" for m in d.manifests)
    lws = _find(d, "LeaderWorkerSet")["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]
    assert (
        lws["initContainers"][0]["args"][3] == "/models/repos/swallow-70b/tensorrt_llm/1/engine/manifest.json"
    )
    assert lws["containers"][0]["args"][:4] == ["deploy", "leader", "--repo", "/models/repos/swallow-70b"]
    assert [p for m in d.manifests for p in validate(m.obj)] == []
    with pytest.raises(UsageError, match="does not name the GPU"):
        build_deployment(DeployRequest(plan=None, repo=_packaged_repo(tmp_path / "old", 1, None)))
    with pytest.raises(UsageError, match="is not a model repository"):
        build_deployment(DeployRequest(plan=None, repo=tmp_path / "missing"))
