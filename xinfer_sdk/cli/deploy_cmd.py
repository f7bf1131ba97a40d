"""`xinfer-sdk deploy k8s`: Kubernetes manifests + Helm chart; `xinfer-sdk fetch`: the init container's download."""

from __future__ import annotations

import click

from ._common import emit_json, err, json_option, obj, out


@click.group()
def deploy() -> None:
    """Generate what a cluster needs to run a bundle (see docs/kubernetes.md)."""


@deploy.command("k8s")
@click.argument("bundle", type=click.Path(exists=True, file_okay=False))
@click.option("-p", "--profile", required=True, help="Hardware profile of the nodes (t4, l4, a100-sxm4-80gb, cpu, ...).")
@click.option("--image", required=True, metavar="REGISTRY/xinfer:TAG",
              help="The server image (build it with deploy/docker/Dockerfile.cpu / .cuda / .jetson / .jetpack7 / .rocm).")
@click.option("-o", "--output", "output", default=None, type=click.Path(file_okay=False),
              help="Output folder (default: ./<name>-k8s).")
@click.option("--name", default=None, help="Name of the Deployment, Service, ... (default: from the bundle).")
@click.option("-n", "--namespace", default=None, help="Namespace to write into the objects (default: none, "
              "so `kubectl -n` decides).")
@click.option("--replicas", type=int, default=None, help="Replicas without autoscaling (default: from the plan, else 1).")
@click.option("--min-replicas", type=int, default=None, help="Autoscaler minimum (default: --replicas).")
@click.option("--max-replicas", type=int, default=None, help="Autoscaler maximum (default: twice the minimum).")
@click.option("--target-queue-depth", type=float, default=8.0, show_default=True,
              help="Autoscale to keep this many requests waiting per pod (xinfer_queue_depth, 1-minute average).")
@click.option("--target-cpu", "target_cpu", type=int, default=70, show_default=True,
              help="CPU utilisation target of the fallback metric, percent of the request.")
@click.option("--no-autoscale", is_flag=True, help="No HorizontalPodAutoscaler: a fixed --replicas.")
@click.option("--from-plan", type=click.Path(dir_okay=False), default=None,
              help="plan.json from `xinfer-sdk plan ... --json`: replicas and batch policy for this profile.")
@click.option("--cpu", type=float, default=None, help="CPU cores per replica (default: the profile's kubernetes.cpu).")
@click.option("--memory", default=None, help="Memory per replica, e.g. 6Gi (default: the profile's floor + the "
              "bundle's weights x3).")
@click.option("--bundle-pvc", default=None, metavar="CLAIM",
              help="PersistentVolumeClaim holding the bundle, mounted read-only (default: <name>-bundle).")
@click.option("--bundle-subpath", default=None, help="Folder of the bundle inside that volume.")
@click.option("--bundle-url", default=None, metavar="URL",
              help="Fetch the bundle (.tar.gz) from this URL in an init container instead of a volume.")
@click.option("--bundle-url-secret", default=None, metavar="SECRET",
              help="Like --bundle-url, the URL read from this Secret's 'url' entry (for presigned URLs).")
@click.option("--gpu-label", type=click.Choice(["gfd", "gke", "none"]), default="gfd", show_default=True,
              help="How GPU nodes of the profile's model are selected: the vendor's labeller (GPU Feature "
                   "Discovery's nvidia.com/gpu.product, its compute capability on Jetson; AMD's "
                   "amd.com/gpu.product-name), GKE's cloud.google.com/gke-accelerator, or none.")
@click.option("--drain-timeout", default="30s", show_default=True,
              help="How long the server answers accepted requests after SIGTERM.")
@click.option("--prestop-delay", default="10s", show_default=True,
              help="preStop sleep: time for endpoints to drop the pod before SIGTERM.")
@click.option("--monitor", type=click.Choice(["servicemonitor", "podmonitor"]), default=None,
              help="Also write a Prometheus Operator ServiceMonitor or PodMonitor.")
@click.option("--monitor-label", "monitor_labels", multiple=True, metavar="KEY=VALUE",
              help="Label the monitor so your Prometheus selects it (e.g. release=kube-prometheus-stack).")
@click.option("--scrape-interval", default="15s", show_default=True, help="Scrape interval of the monitor.")
@click.option("--node-selector", "node_selector", multiple=True, metavar="KEY=VALUE",
              help="Extra node label to require (repeatable).")
@click.option("--runtime-class", default=None, help="runtimeClassName (e.g. nvidia where it is not the default).")
@click.option("--api-key-secret", default=None, metavar="SECRET",
              help="Require an API key, read from this Secret's 'api-key' entry.")
@click.option("--image-pull-policy", type=click.Choice(["IfNotPresent", "Always", "Never"]), default="IfNotPresent",
              show_default=True)
@click.option("--gpus-per-pod", type=int, default=1, show_default=True,
              help="GPUs each pod requests; above 1 the server runs the model on every one (device all), "
                   "device_concurrency workers on each.")
@click.option("--slo-p99", default=None, metavar="DURATION",
              help="p99 latency the alert rules hold the server to, e.g. 50ms (default: the plan's --p99 with "
                   "--from-plan, else 100ms).")
@click.option("--runbook-base", default=None, metavar="URL",
              help="Where the alerts' runbook_url points: the URL of docs/metrics.md as your team reads it "
                   "(default: the relative path docs/metrics.md).")
@click.option("--force", is_flag=True, help="Write into a non-empty output folder.")
@json_option
@click.pass_context
def k8s(ctx: click.Context, bundle: str, profile: str, image: str, output: str | None, name: str | None,
        namespace: str | None, replicas: int | None, min_replicas: int | None, max_replicas: int | None,
        target_queue_depth: float, target_cpu: int, no_autoscale: bool, from_plan: str | None, cpu: float | None,
        memory: str | None, bundle_pvc: str | None, bundle_subpath: str | None, bundle_url: str | None,
        bundle_url_secret: str | None, gpu_label: str,
        drain_timeout: str, prestop_delay: str, monitor: str | None, monitor_labels: tuple[str, ...],
        scrape_interval: str, node_selector: tuple[str, ...], runtime_class: str | None,
        api_key_secret: str | None, image_pull_policy: str, gpus_per_pod: int, slo_p99: str | None,
        runbook_base: str | None, force: bool, as_json: bool) -> None:
    """Write Kubernetes manifests and a Helm chart that serve BUNDLE on PROFILE nodes, autoscaled on queue depth.

    Example: xinfer-sdk deploy k8s mlp.xinfer --profile t4 --image registry.example.com/xinfer:0.1 \\
    --from-plan plan.json --max-replicas 8 -o deploy-mlp
    """
    from ..deploy.spec import resolve_spec
    from ..deploy.writer import write

    spec = resolve_spec(bundle, profile=profile, image=image, name=name, namespace=namespace, replicas=replicas,
                        min_replicas=min_replicas, max_replicas=max_replicas, autoscale=not no_autoscale,
                        target_queue_depth=target_queue_depth, target_cpu_utilization=target_cpu,
                        from_plan=from_plan, cpu=cpu, memory=memory, bundle_pvc=bundle_pvc,
                        bundle_subpath=bundle_subpath, bundle_url=bundle_url, bundle_url_secret=bundle_url_secret,
                        gpu_label=gpu_label, drain_timeout=drain_timeout,
                        prestop_delay=prestop_delay, monitor=monitor, monitor_labels=monitor_labels,
                        scrape_interval=scrape_interval, node_selector=node_selector, runtime_class=runtime_class,
                        api_key_secret=api_key_secret, image_pull_policy=image_pull_policy,
                        profiles_dirs=obj(ctx).get("profiles_dirs", ()), gpus_per_pod=gpus_per_pod,
                        slo_p99=slo_p99, runbook_base=runbook_base)
    folder = output or f"{spec.name}-k8s"
    rendered = write(spec, folder, force=force)
    files = [f"manifests/{f}" for f, _ in rendered.manifests()]
    if as_json:
        emit_json({"output": folder, "name": spec.name, "profile": spec.profile.name, "manifests": files,
                   "chart": f"chart/{spec.name}", "notes": spec.notes})
        return
    for n in spec.notes:
        err.print(f"note: {n}", markup=False)
    out.print(f"wrote {folder}/: {len(files)} manifests, Helm chart chart/{spec.name}, prometheus-adapter rule, "
              "alert rules prometheus/xinfer-alerts.yaml, README.md", markup=False)
    out.print(f"  kubectl apply -f {folder}/manifests/   (or: helm upgrade --install {spec.name} "
              f"{folder}/chart/{spec.name})", markup=False)


@click.command()
@click.argument("paths", nargs=-1, required=True, metavar="[URL] DEST")
@click.option("--url", "url_opt", default=None, help="The archive's URL (instead of the URL argument).")
@click.option("--url-env", default=None, metavar="VAR", help="Read the URL from this environment variable (a "
              "presigned URL is a credential: Kubernetes passes it from a Secret).")
@click.option("--sha256", default=None, metavar="HEX", help="Expected sha256 of the bundle's xinfer.yaml (pins the "
              "bundle: every artifact's digest is in it).")
@click.option("--retries", type=int, default=3, show_default=True)
@json_option
def fetch(paths: tuple[str, ...], url_opt: str | None, url_env: str | None, sha256: str | None, retries: int,
          as_json: bool) -> None:
    """Download a bundle archive (.tar / .tar.gz) from URL into DEST and verify its checksums."""
    import os

    from ..deploy.fetch import fetch as do_fetch
    from ..errors import UserError

    if len(paths) > 2:
        raise UserError("expected [URL] DEST")
    url = paths[0] if len(paths) == 2 else url_opt
    if url_env:
        url = os.environ.get(url_env) or None
        if url is None:
            raise UserError(f"--url-env {url_env}: the environment variable is not set or empty")
    if not url:
        raise UserError("no URL: pass URL DEST, --url URL or --url-env VAR")
    path = do_fetch(url, paths[-1], sha256=sha256, retries=retries)
    err.print(f"bundle verified in {path}", markup=False)
    if as_json:
        emit_json(_fetched(url, path))


def _fetched(url: str, path) -> dict:
    """``fetch --json``: where the verified bundle is and which one it is (the URL without its query or user
    info: a presigned URL is a credential)."""
    import hashlib

    from ..bundle import MANIFEST_NAME, open_bundle
    from ..deploy.fetch import public_url

    manifest = open_bundle(path, verify=False).manifest  # fetch verified every checksum already
    return {"bundle": str(path), "name": manifest.name, "url": public_url(url), "verified": True,
            "manifest_sha256": hashlib.sha256((path / MANIFEST_NAME).read_bytes()).hexdigest(),
            "artifacts": len(manifest.artifacts)}
