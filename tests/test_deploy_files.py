"""The deploy files are checked, not just shipped: `systemd-analyze verify` passes on the
systemd units (with their shared hardening drop-in) and their exposure stays low; the
processes run as an unprivileged user that writes only its data directory; the compose file and
the example configurations use settings keyturn knows and the README documents, and each
keyturn process there has its own least-privilege broker account. (No Docker engine runs on the
test machines: the compose file and the Dockerfile are checked, never run.)"""
from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from shared.settings import ENV_PREFIX, Settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
README = (DEPLOY.parent / "README.md").read_text()
UNITS = ["keyturn-daemon.service", "keyturn-web.service", "keyturn-worker@dmz.service"]
HARDENING = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
             "ProtectHome": "yes", "ReadWritePaths": "/var/lib/keyturn", "User": "keyturn"}
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A file system root for systemd-analyze: the system's own units, ours in /etc, and the
    programs our units start (stand-ins: `verify` checks that they exist and are executable)."""
    root = tmp_path_factory.mktemp("systemd-root")
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    shutil.copytree(DEPLOY / "systemd", root / "etc/systemd/system")
    for program in ("keyturn", "gunicorn"):
        path = root / "usr/local/bin" / program
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    return root


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed "
                    "(.ci/prepare installs the systemd package)")
def test_systemd_analyze_verifies_the_units_and_rates_them_hardened(root):
    verified = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", f"--root={root}", *UNITS],
                              capture_output=True, text=True, timeout=60)
    assert (verified.returncode, verified.stdout + verified.stderr) == (0, "")
    for unit in UNITS:
        rated = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=yes", f"--root={root}",
                                unit], capture_output=True, text=True, timeout=60)
        exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", rated.stdout)
        assert exposure and float(exposure.group(1)) <= 2.0, rated.stdout[-500:]


def test_every_unit_runs_unprivileged_with_the_hardening_the_readme_names():
    dropin = read_unit(DEPLOY / "systemd/keyturn-.service.d/hardening.conf")
    for path in sorted((DEPLOY / "systemd").glob("keyturn-*.service")):
        service = read_unit(path) | dropin      # the drop-in applies to every keyturn-* unit
        for key, value in HARDENING.items():
            assert service.get(key) == value, (path.name, key)
        assert service["ExecStart"].startswith("/usr/local/bin/")
        assert service["Environment"].startswith("KEYTURN_CONFIG=/etc/keyturn/")
    for key in HARDENING:
        assert f"`{key}" in README, key


def documented(variable: str) -> bool:
    """In the README's settings table, alone or in a row such as `KEYTURN_SMTP_HOST`, `_PORT`."""
    group, _, last = variable.rpartition("_")
    return f"`{variable}`" in README or (f"`_{last}`" in README and f"`{group}_" in README)


def read_unit(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(path.read_text())
    return dict(parser["Service"])


def test_example_configurations_use_known_settings():
    for name in ("keyturn.toml", "worker.toml"):
        keys = tomllib.loads((DEPLOY / name).read_text()).keys()
        assert keys <= Settings.model_fields.keys(), (name, keys - Settings.model_fields.keys())
        for key in keys:
            assert documented(f"{ENV_PREFIX}{key.upper()}"), key
    worker = tomllib.loads((DEPLOY / "worker.toml").read_text())
    assert worker["broker_url"].startswith("amqps://keyturn-zone-")
    controller = tomllib.loads((DEPLOY / "keyturn.toml").read_text())
    assert controller["broker_url"].startswith("amqps://keyturn-controller:")


def test_the_compose_file_gives_each_process_its_own_account_and_no_privileges():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    keyturn = {name: service for name, service in compose["services"].items()
               if "build" in service}
    assert set(keyturn) == {"controller", "worker-default"}
    for name, service in keyturn.items():
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        for variable in service["environment"]:
            assert variable.startswith(ENV_PREFIX), (name, variable)
            assert variable.removeprefix(ENV_PREFIX).lower() in Settings.model_fields, variable
            assert documented(variable), variable
    assert "amqp://keyturn-controller:" in keyturn["controller"]["environment"]["KEYTURN_BROKER_URL"]
    worker = keyturn["worker-default"]
    assert worker["command"] == "keyturn worker --zone default"
    assert "amqp://keyturn-zone-default:" in worker["environment"]["KEYTURN_BROKER_URL"]
    assert worker["build"]["args"] == {"EXTRAS": "worker"}         # no controller packages
    assert "KEYTURN_DATABASE_URL" not in worker["environment"]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^USER keyturn$", dockerfile, re.M)
    assert 'pip install --no-cache-dir ".[${EXTRAS}]"' in dockerfile
