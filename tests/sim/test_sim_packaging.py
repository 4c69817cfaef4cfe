"""The image installs what sim imports, and nothing of the repo outside sim/ is needed."""
import ast
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIM = os.path.join(ROOT, "infershift", "sim")


def third_party_imports() -> set[str]:
    mods = set()
    for f in os.listdir(SIM):
        if not f.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(SIM, f)).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for n in names:
                top = n.split(".")[0]
                if top not in sys.stdlib_module_names and top != "infershift":
                    mods.add(top)
    return mods


def test_requirements_cover_imports_and_are_pinned():
    reqs = {}
    for line in open(os.path.join(SIM, "requirements.txt")):
        line = line.split("#")[0].strip()
        if line:
            m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9][0-9A-Za-z.]*)", line)
            assert m, f"unpinned requirement: {line}"
            reqs[m.group(1).lower().replace("-", "_")] = m.group(2)
    assert third_party_imports() <= set(reqs), third_party_imports() - set(reqs)


def test_dockerfile_runs_sim_as_non_root_from_slim_python():
    text = open(os.path.join(SIM, "Dockerfile")).read()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert 'ENTRYPOINT ["python", "-m", "infershift.sim"]' in text
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    assert "sim/requirements.txt" in text and "SIM_HOST=0.0.0.0" in text


def test_sim_imports_nothing_from_the_rest_of_the_repo(tmp_path):
    # Copy only infershift/__init__.py and infershift/sim/ (as the image does) and import every module.
    import shutil
    shutil.copytree(SIM, tmp_path / "infershift" / "sim", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(ROOT, "infershift", "__init__.py"), tmp_path / "infershift" / "__init__.py")
    mods = [f[:-3] for f in os.listdir(SIM) if f.endswith(".py") and f not in ("__main__.py",)]
    code = "import importlib\n" + "".join(f"importlib.import_module('infershift.sim.{m}')\n" for m in mods if m != "__init__")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_loadcheck_runs_and_prints_its_figures():
    r = subprocess.run([sys.executable, "-m", "infershift.sim.loadcheck", "--servers", "2", "--rate", "20", "--seconds", "1",
                        "--max-output", "8"],
                       cwd=os.path.dirname(SIM), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "errors=0" in r.stdout and re.search(r"CPU per request: [0-9.]+ ms", r.stdout)
