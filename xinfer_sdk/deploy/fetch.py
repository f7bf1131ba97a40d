"""`xinfer-sdk fetch URL DEST`: the init container's job when the bundle lives in object storage.

Streams a ``.tar`` / ``.tar.gz`` of a bundle (``tar -czf model.tar.gz -C model.xinfer .``) from an http(s)
URL (a presigned S3/GCS URL works) or a file:// path into DEST, refusing unsafe members (absolute paths,
``..``, links, devices), then verifies every artifact's sha256 against the bundle's manifest. A pod whose
bundle is truncated or tampered with never starts.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

from ..bundle import MANIFEST_NAME, open_bundle, sha256_file
from ..errors import BundleError, UserError

log = logging.getLogger("xinfer_sdk.deploy")


def _check_member(m: tarfile.TarInfo) -> None:
    p = PurePosixPath(m.name)
    if p.is_absolute() or ".." in p.parts:
        raise BundleError(f"unsafe path in the archive: {m.name!r} (absolute or with '..')")
    if not (m.isfile() or m.isdir()):
        raise BundleError(f"the archive holds {m.name!r}, which is not a plain file or folder (links and devices "
                          "are refused)")


def _extract(stream, dest: Path) -> int:
    n = 0
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            _check_member(member)
            if hasattr(tarfile, "data_filter"):
                tar.extract(member, dest, filter="data")
            else:  # Python < 3.10.12 / 3.11.4: the checks above are the filter
                tar.extract(member, dest)
            n += 1
    return n


def _flatten(dest: Path) -> None:
    """Accept an archive with the bundle folder on top (``tar -czf m.tar.gz model.xinfer``) as well."""
    if (dest / MANIFEST_NAME).is_file():
        return
    subs = [p for p in dest.iterdir()]
    if len(subs) == 1 and subs[0].is_dir() and (subs[0] / MANIFEST_NAME).is_file():
        top = subs[0]
        for child in list(top.iterdir()):
            shutil.move(str(child), str(dest / child.name))
        top.rmdir()


def public_url(url: str) -> str:
    """``url`` without its query, fragment and user info, for messages and logs: a presigned URL is a credential."""
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    try:
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:  # a malformed port
        netloc = host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def fetch(url: str, dest: str | os.PathLike[str], *, sha256: str | None = None, retries: int = 3,
          timeout: float = 60.0) -> Path:
    """Download and unpack the bundle at ``url`` into ``dest`` (emptied first); return the verified folder.

    ``sha256``: the expected digest of the bundle's manifest (``xinfer.yaml``). The manifest lists every
    artifact's digest, so with this pin an archive swapped for another bundle, or rebuilt, is refused; without it
    only corruption and edits that forget the manifest are caught."""
    out = Path(dest)
    shown = public_url(url)
    out.mkdir(parents=True, exist_ok=True)
    if not url.startswith(("http://", "https://", "file://")):
        raise UserError(f"{shown!r}: expected an http://, https:// or file:// URL of a bundle archive")
    last: Exception | None = None
    for attempt in range(1, retries + 1):
        for child in list(out.iterdir()):  # a previous partial attempt
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - the scheme is checked above
                t0 = time.perf_counter()
                n = _extract(resp, out)
            log.info("fetched %s: %d entries in %.1fs", shown, n, time.perf_counter() - t0)
            break
        except urllib.error.HTTPError as exc:
            if exc.code < 500 and exc.code != 429:  # 403 (expired presigned URL), 404: retrying does not help
                raise UserError(f"{shown}: HTTP {exc.code} {exc.reason}",
                                hint="check the URL (a presigned URL may have expired)") from None
            last = exc
        except tarfile.ReadError as exc:  # the bytes arrived and are no archive: retrying does not help
            raise UserError(f"{shown}: not a tar or tar.gz archive ({exc})",
                            hint="pack the bundle with: tar -czf model.tar.gz -C BUNDLE .") from None
        except (urllib.error.URLError, OSError, EOFError, tarfile.TarError) as exc:  # network, truncated stream
            last = exc
        if attempt < retries:
            log.warning("fetch %s failed (%s); retrying in %ds", shown, last, 2 ** attempt)
            time.sleep(2 ** attempt)
    else:
        raise UserError(f"{shown}: download failed after {retries} attempts ({last})")
    _flatten(out)
    if not (out / MANIFEST_NAME).is_file():
        raise BundleError(f"{shown}: the archive holds no {MANIFEST_NAME} at its top (or in one top folder)",
                          hint="pack the bundle with: tar -czf model.tar.gz -C BUNDLE .")
    if sha256 is not None:
        got = sha256_file(out / MANIFEST_NAME)
        if got != sha256.lower():
            raise BundleError(f"{shown}: the archive holds a different bundle than this deployment pins ({MANIFEST_NAME} "
                              f"sha256 {got[:16]}..., expected {sha256[:16]}...)",
                              hint="regenerate the manifests for this bundle (xinfer-sdk deploy k8s), or upload the "
                                   "bundle they were generated from")
    bundle = open_bundle(out, verify=True)
    log.info("bundle %r verified (%d artifacts)", bundle.name, len(bundle.manifest.artifacts))
    return out
