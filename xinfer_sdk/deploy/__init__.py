"""Kubernetes deployment of a bundle: manifests, a Helm chart with the same content, the autoscaling rule.

    from xinfer_sdk.deploy import resolve_spec, write
    spec = resolve_spec("mlp.xinfer", profile="t4", image="registry.example.com/xinfer:0.1")
    write(spec, "deploy-mlp")

See docs/kubernetes.md. Nothing here talks to a cluster: the output is files for kubectl / helm / GitOps.
"""

from .spec import DeploySpec, resolve_spec
from .writer import render, write

__all__ = ["DeploySpec", "render", "resolve_spec", "write"]
