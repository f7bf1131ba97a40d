"""`xinfer-sdk fetch URL DEST` (the init container of a --bundle-url deployment): downloads over HTTP, unpacks,
verifies every checksum; a tampered, unsafe or missing archive stops the pod with one clear line."""

from __future__ import annotations

import functools
import http.server
import io
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def http_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def pack(bundle: Path, out: Path, *, top: str | None = None, tamper: bool = False) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        for f in sorted(bundle.rglob("*")):
            rel = f.relative_to(bundle).as_posix()
            name = f"{top}/{rel}" if top else rel
            if tamper and f.name == "model.onnx":
                data = bytearray(f.read_bytes())
                data[-1] ^= 0xFF
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(bytes(data)))
            else:
                tar.add(f, arcname=name, recursive=False)
    return out


def test_fetch_over_http_gives_a_bundle_that_serves_the_same_outputs(bundles, http_root, tmp_path, cli_run):
    import xinfer_sdk as xs

    root, base = http_root
    pack(bundles["cpu"], root / "mlp.tar.gz")
    dest = tmp_path / "models" / "mlp"
    code, _, err = cli_run("fetch", f"{base}/mlp.tar.gz", str(dest))
    assert code == 0, err
    assert "verified" in err
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    with xs.load(dest, profile="cpu") as got, xs.load(bundles["cpu"], profile="cpu") as want:
        np.testing.assert_array_equal(got.infer({"input": x})["output"], want.infer({"input": x})["output"])


def test_fetch_accepts_an_archive_with_the_bundle_folder_on_top(bundles, tmp_path, cli_run):
    arc = pack(bundles["cpu"], tmp_path / "top.tar.gz", top="mlp.xinfer")
    code, _, err = cli_run("fetch", arc.as_uri(), str(tmp_path / "dest"))
    assert code == 0, err
    from xinfer_sdk.bundle import MANIFEST_NAME, open_bundle

    assert (tmp_path / "dest" / MANIFEST_NAME).is_file()  # moved up from mlp.xinfer/
    assert open_bundle(tmp_path / "dest").name == "mlp"


def test_tampered_bundle_is_refused(bundles, tmp_path, cli_run):
    arc = pack(bundles["cpu"], tmp_path / "bad.tar.gz", tamper=True)
    code, _, err = cli_run("fetch", arc.as_uri(), str(tmp_path / "dest"))
    assert code == 2
    assert "model.onnx" in err and "checksum" in err.lower()
    assert "Traceback" not in err


def test_unsafe_member_is_refused(tmp_path, cli_run):
    arc = tmp_path / "evil.tar.gz"
    with tarfile.open(arc, "w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    code, _, err = cli_run("fetch", arc.as_uri(), str(tmp_path / "dest"))
    assert code == 2 and "unsafe path" in err
    assert not (tmp_path / "escape.txt").exists()


@pytest.mark.parametrize("name,match", [("missing.tar.gz", "HTTP 404"), ("notatar.tar.gz", "not a tar")])
def test_bad_downloads_fail_at_once_with_one_line(http_root, tmp_path, cli_run, name, match):
    root, base = http_root
    (root / "notatar.tar.gz").write_bytes(b"<html>login page</html>")
    secret = "X-Amz-Signature=deadbeefcafe"  # a presigned URL is a credential: never printed
    code, _, err = cli_run("fetch", f"{base}/{name}?{secret}", str(tmp_path / "dest"))
    assert code == 2 and match in err, err
    ours = [line for line in err.splitlines() if not line.startswith("127.0.0.1 - ")]  # not the test server's log
    assert "Traceback" not in err and f"{base}/{name}" in err and not any(secret in line for line in ours), err


def test_pinned_manifest_refuses_another_bundle(bundles, tmp_path, cli_run):
    """The deployment pins the bundle's manifest digest: a different (even internally consistent) bundle behind
    the same URL is refused, the pinned one accepted; the URL may come from an env var (a Secret)."""
    from xinfer_sdk.bundle import MANIFEST_NAME, sha256_file

    pin = sha256_file(bundles["cpu"] / MANIFEST_NAME)
    other = pack(bundles["t4"], tmp_path / "other.tar.gz")  # a valid bundle, just not this one
    code, _, err = cli_run("fetch", other.as_uri(), str(tmp_path / "d1"), "--sha256", pin)
    assert code == 2 and "different bundle than this deployment pins" in err
    good = pack(bundles["cpu"], tmp_path / "good.tar.gz")
    code, _, err = cli_run("fetch", "--url-env", "BUNDLE_URL", "--sha256", pin, str(tmp_path / "d2"),
                           env={"BUNDLE_URL": good.as_uri()})
    assert code == 0, err
    code, _, err = cli_run("fetch", "--url-env", "NOT_SET_ANYWHERE", str(tmp_path / "d3"))
    assert code == 2 and "NOT_SET_ANYWHERE" in err
