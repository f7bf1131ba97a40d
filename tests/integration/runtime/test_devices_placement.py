"""Several devices per model with the real ONNX Runtime: CPU pseudo-devices ('cpu:0,cpu:1') stand for GPUs; the
CUDA part (ORT CUDA EP device_id per worker) runs in the gpu-marked tests."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from onnx_models import make_mlp_onnx  # noqa: E402

import xinfer_sdk as xs  # noqa: E402


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    path = tmp_path_factory.mktemp("dev") / "mlp.onnx"
    return path, make_mlp_onnx(path)


def test_workers_are_placed_conc_per_device(mlp):
    path, _ = mlp
    with xs.load(path, profile="cpu", device="cpu:0,cpu:1", threads=1,
                 batching={"device_concurrency": 2}) as m:
        d = m.describe()
        assert d["devices"] == ["cpu:0", "cpu:1"] and d["device"] == "cpu:0,cpu:1"
        assert [w["device"] for w in d["workers"]] == ["cpu:0", "cpu:0", "cpu:1", "cpu:1"]


def test_one_queue_feeds_every_device_and_the_stats_say_which_served_what(mlp):
    path, ref = mlp
    n_threads, per = 8, 40
    rng = np.random.default_rng(0)
    xs_ = [rng.standard_normal((1, 8)).astype(np.float32) for _ in range(n_threads * per)]
    with xs.load(path, profile="cpu", device="cpu:0,cpu:1", threads=1,
                 batching={"max_batch_size": 4, "max_batch_delay": "1ms"}) as m:
        got = [None] * len(xs_)

        def run(k):
            for i in range(k * per, (k + 1) * per):
                got[i] = m.infer({"input": xs_[i]})["output"]

        ts = [threading.Thread(target=run, args=(k,)) for k in range(n_threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        stats = m.device_stats()
    for x, y in zip(xs_, got):
        np.testing.assert_allclose(y, ref(x), rtol=1e-4, atol=1e-5)
    assert sum(s["inferences"] for s in stats.values()) == len(xs_)
    assert all(s["batches"] > 0 and s["compute_s"] > 0 for s in stats.values()), stats


def test_threads_per_worker_split_the_cpus_over_every_device(mlp):
    path, _ = mlp
    with xs.load(path, profile="cpu", device="cpu:0,cpu:1", batching={"device_concurrency": 1}) as one, \
            xs.load(path, profile="cpu", device="cpu", batching={"device_concurrency": 1}) as single:
        assert one.threads == max(1, single.threads // 2)


def test_all_without_a_gpu_is_refused_before_loading(mlp):
    from xinfer_sdk.runtime.devices import visible_cuda_devices

    if visible_cuda_devices()[0]:
        pytest.skip("this machine has a GPU")
    with pytest.raises(xs.errors.UserError, match="device 'all' found no CUDA device"):
        xs.load(mlp[0], profile="cpu", device="all")


@pytest.mark.gpu
def test_every_visible_gpu_gets_workers_with_its_own_device_id(mlp):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA execution provider here (onnxruntime-gpu not installed)")
    path, ref = mlp
    with xs.load(path, profile="cpu", device="all", backend="onnxruntime", threads=1) as m:
        devs = m.describe()["devices"]
        x = np.ones((1, 8), np.float32)
        np.testing.assert_allclose(m.infer({"input": x})["output"], ref(x), rtol=1e-3, atol=1e-3)
        for w, inner in zip(m.describe()["workers"], m.batcher.backends):
            assert w["device"] == inner.inner.device
            opts = inner.inner.session.get_provider_options().get("CUDAExecutionProvider", {})
            assert opts.get("device_id") == w["device"].split(":")[1]
    assert devs == [f"cuda:{i}" for i in range(len(devs))]


@pytest.mark.gpu
def test_two_gpus_both_serve(mlp):
    from xinfer_sdk.runtime.devices import visible_cuda_devices

    if visible_cuda_devices()[0] < 2:
        pytest.skip("needs two CUDA devices")
    path, _ = mlp
    with xs.load(path, profile="cpu", device="cuda:0,1", backend="onnxruntime", threads=1,
                 batching={"max_batch_size": 2, "max_batch_delay": "0ms"}) as m:
        futs = [m.submit({"input": np.ones((1, 8), np.float32)}) for _ in range(200)]
        for f in futs:
            f.result(60)
        assert all(s["batches"] > 0 for s in m.device_stats().values())
