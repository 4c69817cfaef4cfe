"""The picker's and the simulator's images carry only runtime modules, and those suffice: the
files each Dockerfile COPYs (and its .dockerignore lets into the build context) are laid out as
the image's /app and the entrypoint runs from them alone, with the image's requirements."""
from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PICKER_PYTHON = REPO / ".venv-picker" / "bin" / "python"
IMAGES = {
    # image: (Dockerfile, interpreter with the image's requirements, entrypoint check)
    "picker": ("infershift/picker/Dockerfile", PICKER_PYTHON, ["-m", "infershift.picker", "--help"]),
    "sim": ("infershift/sim/Dockerfile", Path(sys.executable), ["-m", "infershift.sim", "--help"]),
}


def _copies(dockerfile: Path) -> list[tuple[list[str], str]]:
    out = []
    for line in dockerfile.read_text().splitlines():
        m = re.match(r"^COPY\s+(?!--from)(.+)$", line.strip())
        if m:
            *sources, dest = m.group(1).split()
            out.append((sources, dest))
    return out


def _ignored(path: str, patterns: list[str]) -> bool:
    """BuildKit .dockerignore semantics for the patterns used here: last match wins, `!` re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        if fnmatch.fnmatch(path, pat) or path.startswith(pat.rstrip("/") + "/") or fnmatch.fnmatch(path, pat + "/*"):
            ignored = not negate
    return ignored


@pytest.mark.parametrize("image", IMAGES)
def test_the_image_runs_from_exactly_what_it_copies(image, tmp_path):
    dockerfile, python, check = IMAGES[image]
    if not python.exists():
        pytest.skip(f"{python} missing (make setup)")
    app = tmp_path / "app"
    for sources, dest in _copies(REPO / dockerfile):
        for source in sources:
            src = REPO / source
            target = Path(dest.replace("/app", str(app), 1))
            if src.is_dir():
                shutil.copytree(src, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target = target / src.name if dest.endswith("/") else target
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, target)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(app)  # as the image: WORKDIR /app, nothing else of the package
    out = subprocess.run([str(python), "-B", *check], cwd=app, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "usage" in out.stdout.lower()
    if image == "picker":  # the /v1/models listing server runs from this image too (components/models_listing.py)
        out = subprocess.run([str(python), "-B", "-m", "infershift.picker.listing", "--help"], cwd=app, env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "--file" in out.stdout, out.stderr[-3000:]
        # and the shadow recorder (components/shadow_recorder.py)
        out = subprocess.run([str(python), "-B", "-m", "infershift.picker.recorder", "--help"], cwd=app, env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "--upstream" in out.stdout, out.stderr[-3000:]
    # nothing imported from the checkout: every infershift module came from /app
    probe = f"import infershift.{image}.__main__\nimport infershift\nprint(infershift.__file__)"
    where = subprocess.run([str(python), "-c", probe], cwd=app, env=env, capture_output=True, text=True, timeout=60)
    assert where.stdout.strip().startswith(str(app)), where.stdout + where.stderr


@pytest.mark.parametrize("image", IMAGES)
def test_the_build_context_holds_only_what_the_image_copies(image):
    dockerfile = REPO / IMAGES[image][0]
    patterns = [l.strip() for l in Path(f"{dockerfile}.dockerignore").read_text().splitlines()
                if l.strip() and not l.startswith("#")]
    copied = [s for sources, _ in _copies(dockerfile) for s in sources]
    for source in copied:
        assert not _ignored(source, patterns), f"{source} is COPYed but excluded from the context"
    for other in ("stacks/Pulumi.local.yaml", "tests/conftest.py", ".venv/bin/python", "bench/__main__.py",
                  "infershift/components/program.py", "infershift/devstack/stack.py"):
        assert _ignored(other, patterns), f"{other} would be sent to the builder"
