"""Cut an upstream CustomResourceDefinition to the ``openAPIV3Schema`` of one served version, as JSON.

Usage: python tests/data/crds/cut.py CRD.yaml VERSION OUT.json [--pod-templates]

Descriptions are dropped (they are most of the bytes and validation never reads them). With
``--pod-templates`` (LeaderWorkerSet) every embedded ``PodTemplateSpec`` body (an object with both
``metadata`` and ``spec`` whose spec has ``containers``) is replaced by a plain object: the tests
validate those pod templates strictly against Kubernetes' own PodTemplateSpec schema instead, which is
what the LeaderWorkerSet CRD embeds (generated from k8s.io/api core/v1).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml


def _strip(node: Any, pod_templates: bool) -> Any:
    if isinstance(node, list):
        return [_strip(item, pod_templates) for item in node]
    if not isinstance(node, dict):
        return node
    props = node.get("properties")
    if (
        pod_templates
        and isinstance(props, dict)
        and set(props) == {"metadata", "spec"}
        and "containers" in (props["spec"].get("properties") or {})
    ):
        return {
            "type": "object",
            "x-swallow-trt-cut": "PodTemplateSpec: validated against Kubernetes' schema",
        }
    return {k: _strip(v, pod_templates) for k, v in node.items() if k != "description"}


def main(argv: list[str]) -> None:
    source, version, out = Path(argv[0]), argv[1], Path(argv[2])
    crd = yaml.safe_load(source.read_text())
    served = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = _strip(served[0]["schema"]["openAPIV3Schema"], "--pod-templates" in argv)
    document = {
        "group": crd["spec"]["group"],
        "kind": crd["spec"]["names"]["kind"],
        "version": version,
        "openAPIV3Schema": schema,
    }
    out.write_text(json.dumps(document, sort_keys=True, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
