"""Triton's system shared-memory extension, driven by tritonclient's own shared-memory utilities over HTTP and
gRPC (the real server, a test-double engine that doubles its input)."""

from __future__ import annotations

import base64
import os
import uuid

import numpy as np
import pytest
from server_doubles import make_model

th = pytest.importorskip("tritonclient.http")
tg = pytest.importorskip("tritonclient.grpc")
shm = pytest.importorskip("tritonclient.utils.shared_memory")
from tritonclient.utils import InferenceServerException  # noqa: E402

if not os.path.isdir("/dev/shm"):
    pytest.skip("no /dev/shm on this machine", allow_module_level=True)


@pytest.fixture(scope="module")
def srv():
    from xinfer_sdk.server.runner import Server

    s = Server([make_model()], port=0, grpc_port=0, gpu_metrics=False, drain_timeout=5).start_background()
    yield s
    if s._thread.is_alive():
        s.stop()


@pytest.fixture(params=["http", "grpc"])
def client(request, srv):
    if request.param == "http":
        c = th.InferenceServerClient(f"127.0.0.1:{srv.port}")
    else:
        c = tg.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
    c.mod = th if request.param == "http" else tg
    yield c
    c.unregister_system_shared_memory()


@pytest.fixture
def region():
    """region(byte_size) -> (name, key, handle) of a fresh POSIX shared memory object, destroyed at teardown."""
    made = []

    def make(size=64):
        name = f"r{uuid.uuid4().hex[:8]}"
        handle = shm.create_shared_memory_region(name, f"/xinfer_test_{name}", size)
        made.append(handle)
        return name, f"/xinfer_test_{name}", handle

    yield make
    for h in made:
        shm.destroy_shared_memory_region(h)


def _status(c, name=""):
    st = c.get_system_shared_memory_status(name)
    if isinstance(st, list):  # HTTP: a JSON list
        return {r["name"]: (r["key"], int(r["offset"]), int(r["byte_size"])) for r in st}
    return {n: (r.key, r.offset, r.byte_size) for n, r in st.regions.items()}


def _shm_input(c, name, nbytes, offset=0):
    i = c.mod.InferInput("x", [2, 4], "FP32")
    i.set_shared_memory(name, nbytes, offset)
    return i


def test_register_status_unregister_by_name_and_all(client, region):
    a, key_a, _ = region(64)
    b, key_b, _ = region(128)
    client.register_system_shared_memory(a, key_a, 64)
    client.register_system_shared_memory(b, key_b, 96, offset=32)
    assert _status(client) == {a: (key_a, 0, 64), b: (key_b, 32, 96)}
    assert _status(client, b) == {b: (key_b, 32, 96)}
    client.unregister_system_shared_memory(a)
    assert set(_status(client)) == {b}
    client.unregister_system_shared_memory()
    assert _status(client) == {}


def test_inputs_and_outputs_travel_through_shared_memory(client, region):
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    name_in, key_in, h_in = region(64)
    name_out, key_out, h_out = region(64)
    shm.set_shared_memory_region(h_in, [x], offset=16)
    client.register_system_shared_memory(name_in, key_in, 64)
    client.register_system_shared_memory(name_out, key_out, 64)
    out = client.mod.InferRequestedOutput("y")
    out.set_shared_memory(name_out, 32, offset=8)
    r = client.infer("dbl", [_shm_input(client, name_in, 32, offset=16)], outputs=[out])
    got = shm.get_contents_as_numpy(h_out, np.float32, [2, 4], offset=8)
    np.testing.assert_array_equal(got, x * 2)
    assert r.get_output("y") is not None  # the output is described (name, shape), its data is in the region


def test_shared_memory_input_with_a_binary_output(client, region):
    x = np.full((2, 4), 1.5, np.float32)
    name, key, h = region(32)
    shm.set_shared_memory_region(h, [x])
    client.register_system_shared_memory(name, key, 32)
    r = client.infer("dbl", [_shm_input(client, name, 32)])
    np.testing.assert_array_equal(r.as_numpy("y"), x * 2)


def test_unknown_region_is_refused_naming_it(client):
    with pytest.raises(InferenceServerException) as ei:
        client.infer("dbl", [_shm_input(client, "never-registered", 32)])
    assert "never-registered" in ei.value.message() and "not registered" in ei.value.message()


def test_range_outside_the_region_is_refused(client, region):
    name, key, _ = region(32)
    client.register_system_shared_memory(name, key, 32)
    with pytest.raises(InferenceServerException) as ei:
        client.infer("dbl", [_shm_input(client, name, 32, offset=16)])
    assert name in ei.value.message() and "past its end" in ei.value.message()


def test_too_small_output_region_is_refused_naming_it(client, region):
    x = np.ones((2, 4), np.float32)
    name, key, h = region(32)
    out_name, out_key, _ = region(16)
    shm.set_shared_memory_region(h, [x])
    client.register_system_shared_memory(name, key, 32)
    client.register_system_shared_memory(out_name, out_key, 16)
    out = client.mod.InferRequestedOutput("y")
    out.set_shared_memory(out_name, 16)
    with pytest.raises(InferenceServerException) as ei:
        client.infer("dbl", [_shm_input(client, name, 32)], outputs=[out])
    assert out_name in ei.value.message() and "32 bytes" in ei.value.message()


@pytest.mark.parametrize("key", ["/xinfer_no_such_object", "/../etc/passwd", ""])
def test_bad_key_is_refused(client, key):
    with pytest.raises(InferenceServerException) as ei:
        client.register_system_shared_memory("bad", key, 16)
    assert "'bad'" in ei.value.message()
    assert _status(client) == {}


def test_registering_past_the_object_end_is_refused(client, region):
    name, key, _ = region(32)
    with pytest.raises(InferenceServerException) as ei:
        client.register_system_shared_memory(name, key, 64)
    assert name in ei.value.message() and "32 bytes" in ei.value.message()


def test_a_name_registered_twice_is_refused(client, region):
    name, key, _ = region(32)
    client.register_system_shared_memory(name, key, 32)
    with pytest.raises(InferenceServerException) as ei:
        client.register_system_shared_memory(name, key, 32)
    assert "already registered" in ei.value.message()


def test_regions_are_closed_when_the_server_stops(region):
    from xinfer_sdk.server.runner import Server

    s = Server([make_model()], port=0, grpc_port=None, gpu_metrics=False, drain_timeout=5).start_background()
    name, key, _ = region(32)
    th.InferenceServerClient(f"127.0.0.1:{s.port}").register_system_shared_memory(name, key, 32)
    reg = s.service.shared_memory
    held = reg.regions[name]
    assert s.stop() == 0
    assert reg.regions == {} and held.closed


def test_input_is_read_from_the_mapping_without_a_copy(tmp_path):
    """The array handed to the batching core is a view of the mapped region, not a copy of it."""
    from xinfer_sdk.server.codec import decode_http_request
    from xinfer_sdk.server.shm import SharedMemory

    key = f"/xinfer_test_{uuid.uuid4().hex[:8]}"
    h = shm.create_shared_memory_region("z", key, 32)
    reg = SharedMemory()
    try:
        shm.set_shared_memory_region(h, [np.arange(8, dtype=np.float32)])
        reg.register_system("z", key, 0, 32)
        body = (b'{"inputs":[{"name":"x","datatype":"FP32","shape":[2,4],"parameters":{"shared_memory_region":"z",'
                b'"shared_memory_byte_size":32}}]}')
        arr = decode_http_request(body, None, [], reg).inputs["x"]
        np.testing.assert_array_equal(arr.reshape(-1), np.arange(8, dtype=np.float32))
        assert not arr.flags.owndata
        shm.set_shared_memory_region(h, [np.full(8, 7, np.float32)])  # the client rewrites the region ...
        assert arr[0, 0] == 7  # ... and the server's array is that memory
        del arr
    finally:
        reg.close()
        shm.destroy_shared_memory_region(h)


@pytest.mark.gpu
def test_cuda_shared_memory_round_trip(srv):
    """CUDA IPC: needs a GPU and cuda-python; skipped elsewhere."""
    cudashm = pytest.importorskip("tritonclient.utils.cuda_shared_memory")
    pytest.importorskip("cuda.bindings.runtime")
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    try:
        h_in = cudashm.create_shared_memory_region("cin", 32, 0)
        h_out = cudashm.create_shared_memory_region("cout", 32, 0)
    except Exception as exc:  # no device
        pytest.skip(f"no CUDA device: {exc}")
    try:
        cudashm.set_shared_memory_region(h_in, [x])
        c = th.InferenceServerClient(f"127.0.0.1:{srv.port}")
        c.register_cuda_shared_memory("cin", cudashm.get_raw_handle(h_in), 0, 32)
        c.register_cuda_shared_memory("cout", cudashm.get_raw_handle(h_out), 0, 32)
        i = th.InferInput("x", [2, 4], "FP32")
        i.set_shared_memory("cin", 32)
        o = th.InferRequestedOutput("y")
        o.set_shared_memory("cout", 32)
        c.infer("dbl", [i], outputs=[o])
        np.testing.assert_array_equal(cudashm.get_contents_as_numpy(h_out, np.float32, [2, 4]), x * 2)
        assert {r["name"] for r in c.get_cuda_shared_memory_status()} == {"cin", "cout"}
        c.unregister_cuda_shared_memory()
    finally:
        cudashm.destroy_shared_memory_region(h_in)
        cudashm.destroy_shared_memory_region(h_out)


def test_cuda_register_without_cuda_python_says_what_to_install(client):
    try:
        import cuda.bindings.runtime  # noqa: F401
        pytest.skip("cuda-python is installed here")
    except ImportError:
        pass
    raw = base64.b64encode(b"A" * 64)  # the shape of a cudaIpcMemHandle_t, as get_raw_handle returns it
    with pytest.raises(InferenceServerException) as ei:
        client.register_cuda_shared_memory("c", raw.decode() if client.mod is th else raw, 0, 16)
    assert "cuda-python" in ei.value.message() and "xinfer-sdk[gpu]" in ei.value.message()
