"""The network limits as settings: defaults, validation with errors that name the flag, config.yaml and CLI
spellings, the request-byte budget, the open-file budget at start, and the generated Kubernetes config."""

from __future__ import annotations

import subprocess
import sys

import pytest

from xinfer_sdk.errors import UserError
from xinfer_sdk.policy import parse_duration
from xinfer_sdk.server.config import parse_size, read_serve_config
from xinfer_sdk.server.limits import LIMIT_KEYS, RequestBudget, ServerLimits


def test_defaults_are_production_values():
    lim = ServerLimits()
    # the bar: every read/idle timeout at most 30 s by default, a finite connection cap and byte budget
    assert max(lim.header_timeout, lim.body_timeout, lim.keepalive_timeout, lim.idle_timeout) <= 30
    assert lim.max_connections == 4096 and lim.max_buffered == 1 << 30 and lim.drain_delay == 0


@pytest.mark.parametrize("field,value,flag", [("header_timeout", 0, "--header-timeout"),
                                              ("idle_timeout", -1, "--idle-timeout"),
                                              ("max_connections", 0, "--max-connections"),
                                              ("max_buffered", 1000, "--max-buffered"),
                                              ("drain_delay", -0.5, "--drain-delay")])
def test_bad_values_name_the_flag(field, value, flag):
    with pytest.raises(UserError, match=flag):
        ServerLimits(**{field: value})


def test_config_yaml_durations_and_sizes(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("server:\n  header_timeout: 2s\n  keepalive_timeout: 500ms\n  max_buffered: 64MiB\n"
                   "  max_connections: 10\n  drain_delay: 3s\nmodels:\n  - {name: m, path: m.onnx}\n")
    lim = ServerLimits.from_settings(read_serve_config(cfg).server)
    assert (lim.header_timeout, lim.keepalive_timeout, lim.max_buffered, lim.max_connections, lim.drain_delay) == \
        (2.0, 0.5, 64 << 20, 10, 3.0)


def test_config_yaml_typo_suggests_the_key(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("server:\n  header_timout: 2s\nmodels:\n  - {name: m, path: m.onnx}\n")
    with pytest.raises(UserError, match="header_timeout"):
        read_serve_config(cfg)


def test_config_yaml_wrong_type(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("server:\n  max_connections: lots\nmodels:\n  - {name: m, path: m.onnx}\n")
    with pytest.raises(UserError, match="max_connections: expected a whole number"):
        read_serve_config(cfg)


def test_budget_refuses_beyond_the_limit_and_recovers():
    b = RequestBudget(100)
    assert b.take(60) and not b.take(50) and b.refused == 1
    b.give(60)
    assert b.take(100) and b.used == 100


def test_fd_budget_lowers_the_cap_when_the_hard_limit_is_small():
    code = ("import resource, logging; logging.basicConfig();"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300));"
            "from xinfer_sdk.server.limits import fd_budget; print(fd_budget(4096, 2))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == str((300 - 64) // 2), out.stderr
    assert "--max-connections lowered" in out.stderr and "ulimit -n" in out.stderr


def test_fd_budget_raises_the_soft_limit_when_it_can():
    code = ("import resource; s, h = resource.getrlimit(resource.RLIMIT_NOFILE);"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (256, h));"
            "from xinfer_sdk.server.limits import fd_budget; cap = fd_budget(1000, 1);"
            "print(cap, resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 1064 or h < 1064)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    cap, raised = out.stdout.split()
    assert raised == "True" and (cap == "1000" or int(cap) < 1000), out.stderr


def test_generated_kubernetes_config_spells_the_defaults():
    from xinfer_sdk.deploy.manifests import NETWORK_LIMITS

    assert set(NETWORK_LIMITS) <= set(LIMIT_KEYS)
    lim = ServerLimits()
    for key, value in NETWORK_LIMITS.items():
        parsed = parse_duration(value) if isinstance(value, str) and key.endswith("timeout") else \
            parse_size(value) if isinstance(value, str) else value
        assert parsed == getattr(lim, key), key


@pytest.mark.parametrize("args,expected", [(("--header-timeout", "0"), "--header-timeout"),
                                           (("--keepalive-timeout", "soon"), "--keepalive-timeout"),
                                           (("--max-buffered", "12 potatoes"), "--max-buffered"),
                                           (("--max-connections", "0"), "--max-connections")])
def test_serve_flags_bad_values_are_one_line_exit_2(cli_run, tmp_path, args, expected):
    code, _, err = cli_run("serve", str(tmp_path / "m.onnx"), *args)  # checked before any model loads
    assert code == 2 and expected in err and "Traceback" not in err
