"""The worker-only install is real: keyturn's wheel, built from this tree, installed with only
the worker extra into a fresh virtual environment, offline (the wheels of its dependencies come
from the cache `.ci/prepare` fills), runs `keyturn worker` against a controller of the main
install and rotates an account on an sshd host; Flask and peewee are not there."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from controller import inventory
from controller.models import Execution
from tests.e2e import current_secret, save
from tests.processes import ProcessGroup, keyturn_env

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "controller", "worker", "shared")
# Filled by .ci/prepare (the same default there).
WHEELS = Path(os.environ.get("KEYTURN_WHEEL_CACHE", Path.home() / ".cache/keyturn/worker-wheels"))

def offline_pip_env() -> dict[str, str]:
    """pip with no configuration file and no index: only the wheel directories named."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))} | {
        "PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def run(argv: list, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(arg) for arg in argv], capture_output=True, text=True, timeout=300,
                          **kwargs)
    assert done.returncode == 0, f"{argv}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done


@pytest.fixture(scope="module")
def worker_venv(tmp_path_factory) -> Path:
    """A fresh virtual environment with `keyturn[worker]` and nothing else."""
    assert (WHEELS / "requirements.txt").exists(), f"no wheel cache at {WHEELS}: run .ci/prepare"
    base = tmp_path_factory.mktemp("worker-only")
    source, dist, venv = base / "source", base / "dist", base / "venv"
    source.mkdir()
    for name in SOURCES:       # a copy: building writes build/ and egg-info beside the sources
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                            if (ROOT / name).is_dir() else {}))
    env = offline_pip_env()
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--find-links", WHEELS,
         "-w", dist, source], env=env)
    run([sys.executable, "-m", "venv", venv], env=env)
    run([venv / "bin/python", "-m", "pip", "install", "-q", "--find-links", WHEELS,
         "--find-links", dist, "keyturn[worker]"], env=env)
    return venv


def test_the_worker_extra_has_no_controller_dependency(worker_venv):
    python = worker_venv / "bin/python"
    env = offline_pip_env()
    for module in ("flask", "peewee", "flask_login", "apscheduler", "pyotp"):
        done = subprocess.run([python, "-c", f"import {module}"], capture_output=True, text=True,
                              env=env, cwd=worker_venv)
        assert done.returncode == 1 and "ModuleNotFoundError" in done.stderr, module
    where = run([python, "-c", "import shared, worker.agent, worker.connectors; "
                               "print(shared.__file__)"], env=env, cwd=worker_venv).stdout
    assert where.startswith(str(worker_venv))
    refused = subprocess.run([worker_venv / "bin/keyturn", "plan", "list"], capture_output=True,
                             text=True, env=env, cwd=worker_venv)
    assert refused.returncode == 1
    assert "needs the controller part: pip install 'keyturn[controller]'" in refused.stderr


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_worker_only_install_rotates_for_a_controller(ctl, worker_venv, bus_accounts, ssh_farm,
                                                       tmp_path):
    host, = ssh_farm.start_hosts(1, users={"dora": "dora-old-1"})
    host.set_password("root", "root-pw-w")
    inventory.add_zone(ctl, "w", None, trust_first_use=True)
    inventory.add_asset("w-0", host.address, 22, "linux", "w", "/dc/w", host.host_public_key)
    inventory.set_account(ctl, "w-0", "root", "root-pw-w", True)
    inventory.set_account(ctl, "w-0", "dora", "dora-old-1", False)
    save(ctl, "worker-only", ["dora"])
    controller_env = keyturn_env(ctl.settings, bus_accounts.url("controller"))
    controller = ProcessGroup(controller_env, tmp_path)
    # The worker runs from the virtual environment, without this tree on its path.
    zone_side = ProcessGroup({k: v for k, v in controller_env.items() if k != "PYTHONPATH"}
                             | {"KEYTURN_BROKER_URL": bus_accounts.url("w")}, tmp_path)
    try:
        controller.start("daemon", "daemon")
        worker = zone_side.start("worker", "worker", "--zone", "w",
                                 command=[str(worker_venv / "bin/keyturn")])
        done = controller.run("plan", "run", "worker-only", "--wait", timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        zone_side.close()
        controller.close()
    assert Execution.get().status == "success"
    new = current_secret(ctl, "w-0", "dora")
    assert new != "dora-old-1" and host.password_works("dora", new)
    text = worker.log_text()
    assert "(keyturn 0.1.0, message schema 1) serves rotate.w" in text
    assert "Traceback" not in text and new not in text
