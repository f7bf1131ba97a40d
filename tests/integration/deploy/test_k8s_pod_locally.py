"""The generated pod, run here as the kubelet would run it (minus the container runtime): the Deployment's own
args, env and mounts (relocated under a temp folder), the ConfigMap's config.yaml. Its probes answer on the
named ports, the metrics port exports the series the HPA and the prometheus-adapter rule read (checked with a
real Prometheus), and preStop + SIGTERM under load lose no request within terminationGracePeriodSeconds."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from live import caller, free_ports, prometheus

from xinfer_sdk.deploy import render, resolve_spec
from xinfer_sdk.deploy.manifests import adapter_rule

IMAGE = "registry.example.com/xinfer:0.1.0"


class LocalPod:
    """The container of the generated Deployment as a local process."""

    def __init__(self, spec, tmp: Path, bundle: Path, init_env: dict | None = None):
        objs = {o["kind"]: o for _, o in render(spec).manifests() if not o["metadata"]["name"].endswith("-headless")}
        self.objs = objs
        pod = objs["Deployment"]["spec"]["template"]["spec"]
        self.pod, c = pod, pod["containers"][0]
        self.container = c
        self.root = tmp / "rootfs"
        cfg = yaml.safe_load(objs["ConfigMap"]["data"]["config.yaml"])
        named = {p["name"]: p["containerPort"] for p in c["ports"]}
        # the server listens where the container ports say
        assert (cfg["server"]["port"], cfg["server"]["grpc_port"], cfg["server"]["metrics_port"]) == \
            (named["http"], named["grpc"], named["metrics"])
        self.ports = dict(zip(named, free_ports(len(named))))  # relocated: tests run side by side
        cfg["server"].update(host="127.0.0.1", port=self.ports["http"], grpc_port=self.ports["grpc"],
                             metrics_port=self.ports["metrics"])
        for mount in c["volumeMounts"]:
            self.host(mount["mountPath"]).mkdir(parents=True, exist_ok=True)
        if pod.get("initContainers"):  # the bundle comes from the init container, run as the kubelet would
            for init in pod["initContainers"]:
                args = [str(self.host(a)) if a.startswith("/models/") else a for a in init["args"]]
                res = subprocess.run([sys.executable, "-m", "xinfer_sdk", *args], capture_output=True, text=True,
                                     timeout=120, env={**os.environ, **(init_env or {})})
                assert res.returncode == 0, res.stderr[-2000:]
        else:
            shutil.copytree(bundle, self.host(spec.bundle_mount), dirs_exist_ok=True)
        for m in cfg["models"]:
            m["path"] = str(self.host(m["path"]))
        self.config = cfg
        # the ConfigMap volume: its keys (or its items' key -> path) as files under the mount
        vol = next(v for v in pod["volumes"] if v["name"] == "config")["configMap"]
        mount = next(m for m in c["volumeMounts"] if m["name"] == "config")["mountPath"]
        items = vol.get("items") or [{"key": k, "path": k} for k in objs["ConfigMap"]["data"]]
        for it in items:
            f = self.host(mount) / it["path"]
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(objs["ConfigMap"]["data"][it["key"]])
        conf = self.host(c["args"][c["args"].index("--config") + 1])
        conf.write_text(yaml.safe_dump(cfg))
        self.argv = [sys.executable, "-m", "xinfer_sdk", *[str(conf) if a.endswith("config.yaml") else a
                                                             for a in c["args"]]]
        env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
        for k in ("XINFER_CACHE_DIR", "HOME", "XINFER_PROFILES_PATH"):
            if k in env:
                env[k] = str(self.host(env[k]))
        self.env = {**os.environ, **env}
        self.proc: subprocess.Popen | None = None

    def host(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def probe_url(self, probe: str) -> str:
        get = self.container[probe]["httpGet"]
        return f"http://127.0.0.1:{self.ports[get['port']]}{get['path']}"

    def start(self) -> LocalPod:
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        sp = self.container["startupProbe"]
        deadline = time.time() + sp["periodSeconds"] * sp["failureThreshold"]
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited: {self.proc.stderr.read().decode()[-2000:]}")
            if status(self.probe_url("startupProbe")) == 200:
                return self
            time.sleep(0.2)
        raise AssertionError("the startup probe never passed")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


@pytest.fixture(scope="module")
def pod(bundles, tmp_path_factory):
    spec = resolve_spec(str(bundles["cpu"]), profile="cpu", image=IMAGE, cpu=1)
    p = LocalPod(spec, tmp_path_factory.mktemp("pod"), bundles["cpu"]).start()
    yield p
    p.stop()


def test_probes_answer_on_the_named_ports(pod):
    assert status(pod.probe_url("readinessProbe")) == 200
    assert status(pod.probe_url("livenessProbe")) == 200
    # the metrics port answers health and /metrics, nothing else
    assert status(f"http://127.0.0.1:{pod.ports['metrics']}/v2/health/ready") == 200
    assert status(f"http://127.0.0.1:{pod.ports['metrics']}/v2/models/mlp") == 404
    assert status(f"http://127.0.0.1:{pod.ports['http']}/metrics") == 404  # metrics stay off the API port


def test_metrics_port_exports_what_the_hpa_reads(pod):
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 8], "data": [0.5] * 16}]})
    req = urllib.request.Request(f"http://127.0.0.1:{pod.ports['http']}/v2/models/mlp/infer", data=body.encode())
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200 and json.loads(r.read())["outputs"][0]["shape"] == [2, 4]
    with urllib.request.urlopen(f"http://127.0.0.1:{pod.ports['metrics']}/metrics", timeout=5) as r:
        text = r.read().decode()
    hpa = pod.objs["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["pods"]["metric"]
    model = hpa["selector"]["matchLabels"]["model"]
    assert f'{hpa["name"]}{{model="{model}"' in text  # the series, with the label the HPA selects on
    assert f'xinfer_request_success_total{{model="{model}",version="1"}} 1.0' in text


def test_prometheus_adapter_rule_queries_per_pod(pod, tmp_path):
    """The adapter's seriesQuery finds the series and its metricsQuery (with the adapter's template filled in
    as it does for a Pods metric) returns one value per pod, on a real Prometheus scraping the metrics port with
    the namespace/pod labels Kubernetes service discovery attaches."""
    rule = adapter_rule()
    query = (rule["metricsQuery"].replace("<<.Series>>", "xinfer_queue_depth")
             .replace("<<.LabelMatchers>>", 'namespace="ml",pod=~"mlp-7d9f8-abcde",model="mlp"')
             .replace("<<.GroupBy>>", "pod"))
    with prometheus(tmp_path, f"127.0.0.1:{pod.ports['metrics']}", "{namespace: ml, pod: mlp-7d9f8-abcde}") as api:
        series, result = None, None
        deadline = time.time() + 40
        while time.time() < deadline and not (series and result):
            time.sleep(0.5)
            try:
                series = api("series", {"match[]": rule["seriesQuery"]})
                result = api("query", {"query": query})["result"]
            except OSError:
                continue
    assert series and series[0]["__name__"] == "xinfer_queue_depth", series
    assert {s["pod"] for s in series} == {"mlp-7d9f8-abcde"}
    assert len(result) == 1 and result[0]["metric"] == {"pod": "mlp-7d9f8-abcde"}
    assert float(result[0]["value"][1]) == 0.0  # idle: nothing queued


def test_init_container_fetches_then_the_server_serves_it(bundles, tmp_path):
    """--bundle-url-secret: the init container (its own args, the URL from the Secret's env var) unpacks and
    verifies the pinned bundle into the volume the server then mounts read-only."""
    import tarfile

    arc = tmp_path / "mlp.tar.gz"
    with tarfile.open(arc, "w:gz") as tar:
        for f in sorted(bundles["cpu"].iterdir()):
            tar.add(f, arcname=f.name)
    spec = resolve_spec(str(bundles["cpu"]), profile="cpu", image=IMAGE, cpu=1, bundle_url_secret="mlp-url")
    pod = LocalPod(spec, tmp_path / "pod", bundles["cpu"], init_env={"XINFER_BUNDLE_URL": arc.as_uri()}).start()
    try:
        assert status(pod.probe_url("readinessProbe")) == 200
        assert (pod.host(spec.bundle_mount) / "xinfer.yaml").is_file()
    finally:
        pod.stop()


def test_a_user_profile_travels_in_the_configmap(bundles, tmp_path):
    """A profile the image does not ship (here: cpu with other batch defaults) reaches the pod."""
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "edge-box.yaml").write_text(
        "name: edge-box\nextends: cpu\nbatch: {max_batch_size: 4}\nkubernetes: {cpu: 1, memory_gb: 0.5}\n")
    spec = resolve_spec(str(bundles["cpu"]), profile="edge-box", image=IMAGE,
                        profiles_dirs=[str(tmp_path / "profiles")])
    assert set(spec.user_profiles) == {"edge-box.yaml"}
    pod = LocalPod(spec, tmp_path / "pod", bundles["cpu"])
    env = {e["name"]: e.get("value") for e in pod.container["env"]}
    assert env["XINFER_PROFILES_PATH"] == "/etc/xinfer/profiles"
    pod.start()  # `profile: edge-box` resolved from the ConfigMap's profiles/ folder
    try:
        assert status(pod.probe_url("readinessProbe")) == 200
    finally:
        pod.stop()
    del pod.env["XINFER_PROFILES_PATH"]  # without it, the same pod cannot start
    with pytest.raises(AssertionError, match="unknown profile 'edge-box'"):
        pod.start()


def test_prestop_then_sigterm_under_load_loses_nothing_within_the_grace_period(bundles, tmp_path):
    spec = resolve_spec(str(bundles["cpu"]), profile="cpu", image=IMAGE, cpu=1, prestop_delay="1s",
                        drain_timeout="10s")
    pod = LocalPod(spec, tmp_path, bundles["cpu"]).start()
    grace = pod.pod["terminationGracePeriodSeconds"]
    sleep_s = float(pod.container["lifecycle"]["preStop"]["exec"]["command"][1])
    stats = {"refused": 0, "lost": 0}

    async def run():
        stop_at = time.time() + 30
        tasks = [asyncio.ensure_future(caller(pod.ports["http"], stats, stop_at)) for _ in range(8)]
        await asyncio.sleep(1.0)
        # the kubelet: preStop (the pod keeps serving while endpoints drop it), then SIGTERM
        before = stats.get(200, 0)
        await asyncio.sleep(sleep_s)
        assert stats.get(200, 0) > before and stats["lost"] == 0  # still serving during preStop
        t0 = time.time()
        pod.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*tasks), 40)
        return t0

    try:
        t0 = asyncio.run(run())
        code = pod.proc.wait(grace)
        took = time.time() - t0
        err = pod.proc.stderr.read().decode()
        assert code == 0, err[-2000:]
        assert sleep_s + took < grace  # the kubelet would not have SIGKILLed it
        assert stats["lost"] == 0 and set(stats) <= {"refused", "lost", 200, 503}, stats
        assert stats.get(200, 0) > 50
    finally:
        pod.stop()
