"""`pip install` of the package into fresh virtualenvs outside the repository: the render, the
local stack (real Envoy, simulators, pickers) and the picker run from the installed copies, with
nothing of the checkout on their path; each cloud SDK comes with its extra only."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def test_the_picker_extra_is_the_picker_images_requirements():
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["picker"]
    lines = [l.strip() for l in (REPO / "infershift/picker/requirements.txt").read_text().splitlines()]
    reqs = [l for l in lines if l and not l.startswith("#")]
    assert sorted(x.lower() for x in extra) == sorted(x.lower() for x in reqs)


def _run(argv, cwd, env=None, timeout=900):
    out = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{argv}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Two virtualenvs outside the repository: `main` with infershift[local], `picker` with
    infershift[picker] (pip builds the wheel from the checkout; packages come from the index)."""
    root = tmp_path_factory.mktemp("fresh")
    assert REPO not in root.parents
    # a copy of the sources, so nothing the build writes lands in the checkout
    src = root / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", ".venv*", "out", "__pycache__", "*.egg-info",
                                                            "build", ".pytest_cache"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    def make(name, extra):
        venv = root / name
        _run([sys.executable, "-m", "venv", str(venv)], root, env)
        _run([str(venv / "bin/pip"), "install", "-q", f"{src}[{extra}]"], root, env)
        shutil.rmtree(src / "build", ignore_errors=True)
        return venv / "bin/python"

    with ThreadPoolExecutor(2) as pool:
        main, picker = pool.map(lambda a: make(*a), [("main", "local"), ("picker", "picker")])
    project = root / "project"  # a user's Pulumi project: just stack files
    shutil.copytree(REPO / "stacks", project / "stacks")
    shutil.rmtree(src)
    return {"main": main, "picker": picker, "project": project, "env": env}


def _where(python: Path, env, cwd) -> str:
    return _run([str(python), "-c", "import infershift; print(infershift.__file__)"], cwd, env).stdout.strip()


def test_the_package_is_imported_from_the_virtualenvs(installed):
    for name in ("main", "picker"):
        path = _where(installed[name], installed["env"], installed["project"])
        assert "site-packages" in path and not path.startswith(str(REPO)), path


def test_render_from_the_installed_package(installed):
    out = _run([str(installed["main"]), "-m", "infershift.components.render", "--stack", "local", "--out", "out"],
               installed["project"], installed["env"])
    assert re.search(r"local: \d+ Kubernetes objects", out.stdout), out.stdout
    assert list((installed["project"] / "out").rglob("*.yaml"))


def test_a_cloud_platform_without_its_extra_says_which_extra(installed):
    out = subprocess.run([str(installed["main"]), "-m", "infershift.components.render", "--stack", "ack-canary",
                          "--out", "out-ack"], cwd=installed["project"], env=installed["env"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "pip install 'infershift[ack]'" in out.stdout + out.stderr
    # validation itself needs no cloud SDK
    _run([str(installed["main"]), "-c", "from infershift import spec; spec.load_stack('ack-canary')"],
         installed["project"], installed["env"])


def test_the_local_stack_runs_from_the_installed_packages(installed):
    """`devstack demo`: real Envoy, simulators from `main`, pickers from the `picker` virtualenv."""
    env = {**installed["env"], "INFERSHIFT_PICKER_PYTHON": str(installed["picker"])}
    out = _run([str(installed["main"]), "-m", "infershift.devstack", "demo", "--requests", "60"],
               installed["project"], env, timeout=600)
    assert "every process stopped; all splits within tolerance" in out.stdout, out.stdout[-3000:]
    assert "picker-" not in out.stderr or "Traceback" not in out.stderr, out.stderr[-3000:]


def test_the_picker_runs_from_its_virtualenv(installed, tmp_path):
    cfg = tmp_path / "picker.yaml"
    cfg.write_text("endpoints: [{address: '127.0.0.1:9', name: nowhere, models: [m]}]\n")
    # start it for real on free loopback ports, wait for "picker ready", stop it
    import socket

    def port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    proc = subprocess.Popen([str(installed["picker"]), "-m", "infershift.picker", "--config", str(cfg),
                             "--host", "127.0.0.1", "--grpc-port", str(port()), "--health-port", str(port()),
                             "--metrics-port", str(port())],
                            cwd=tmp_path, env=installed["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "picker ready" in line:
                break
        assert any("picker ready" in l for l in seen), "".join(seen)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_pulumi_install_finds_the_programs_requirements():
    """`pulumi install` installs requirements.txt into Pulumi.yaml's virtualenv; pip resolves it."""
    project = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
    assert project["runtime"]["options"]["virtualenv"] == ".venv"
    lines = [l.strip() for l in (REPO / "requirements.txt").read_text().splitlines() if l.strip() and l[0] != "#"]
    assert lines == ["-e .[ack,gke]"]
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "-q", "-r", "requirements.txt"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.parametrize("module,files", [
    ("infershift.picker", ["Dockerfile", "Dockerfile.dockerignore", "requirements.txt"]),
    ("infershift.sim", ["Dockerfile", "Dockerfile.dockerignore", "requirements.txt"]),
    ("infershift.components.package", ["PulumiPlugin.yaml", "schema.json"]),
])
def test_the_installed_package_carries_its_data_files(installed, module, files):
    """The images' build files (a stack builds them from wherever it is installed) and the component plugin."""
    code = (f"import pathlib, importlib.util\n"
            f"root = pathlib.Path(importlib.util.find_spec({module!r}).origin).parent\n"
            f"print(all((root / f).is_file() for f in {files!r}))")
    out = _run([str(installed["main"]), "-c", code], installed["project"], installed["env"])
    assert out.stdout.strip() == "True"


def test_the_release_artifacts_build_with_what_the_package_needs(tmp_path):
    """`python -m build` gives an sdist and a wheel carrying the package data (image build files,
    the component plugin) and nothing of the tests or benchmarks; the fresh-virtualenv tests above
    install the same wheel (pip builds it from the tree) and run render, devstack and the picker."""
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", ".venv*", "out", "__pycache__", "*.egg-info",
                                                            "build", ".pytest_cache", "dist"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    _run([sys.executable, "-m", "build", "--outdir", str(tmp_path / "dist"), str(src)], tmp_path, env)
    dist = sorted(p.name for p in (tmp_path / "dist").iterdir())
    assert any(n.endswith(".tar.gz") for n in dist) and any(n.endswith(".whl") for n in dist), dist
    import tarfile
    import zipfile

    sdist = next((tmp_path / "dist").glob("*.tar.gz"))
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
    assert any(n.endswith("infershift/picker/Dockerfile") for n in names)
    wheel = next((tmp_path / "dist").glob("*.whl"))
    with zipfile.ZipFile(wheel) as whl:
        files = whl.namelist()
    for needed in ("infershift/picker/Dockerfile", "infershift/sim/Dockerfile.dockerignore",
                   "infershift/components/package/schema.json", "infershift/components/package/PulumiPlugin.yaml"):
        assert needed in files, needed
    assert not any(f.startswith(("tests/", "bench/")) for f in files)
