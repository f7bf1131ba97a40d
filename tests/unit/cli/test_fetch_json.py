"""Issue 18 item 15a: ``fetch --json`` prints where the verified bundle is, as JSON on stdout (the README promises
--json for every command); the URL is shown without its query (a presigned URL is a credential)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import tarfile
import threading

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture
def www(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_fetch_json_names_the_verified_bundle(cli_run, tmp_path, www):
    from onnx_models import make_mlp_onnx

    import xinfer_sdk as xs

    make_mlp_onnx(tmp_path / "mlp.onnx")
    bundle = xs.build(tmp_path / "mlp.onnx", "cpu", "fp32", output=tmp_path / "mlp.xinfer")
    root, base = www
    with tarfile.open(root / "mlp.tar.gz", "w:gz") as tar:
        tar.add(bundle.root, arcname=".")
    dest = tmp_path / "dest"
    code, out, err = cli_run("fetch", f"{base}/mlp.tar.gz?X-Amz-Signature=secret", str(dest), "--json")
    assert code == 0, err
    got = json.loads(out)
    assert got["bundle"] == str(dest) and got["name"] == "mlp" and got["verified"] is True
    assert got["url"] == f"{base}/mlp.tar.gz" and "secret" not in out
    assert got["manifest_sha256"] == hashlib.sha256((dest / "xinfer.yaml").read_bytes()).hexdigest()
