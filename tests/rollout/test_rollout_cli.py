"""The controller's config edits are `pulumi config set --path`'s (checked against the real Pulumi
CLI where it is built), the Automation API applies them with a real `pulumi up`, and the CLI's
status and abort."""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infershift.rollout.controller import Controller, NoApply, RolloutError
from infershift.rollout.metrics import MetricsPages

TESTDATA = Path(__file__).resolve().parent / "testdata"
REPO = Path(__file__).resolve().parents[2]


def _pulumi() -> str | None:
    """The Pulumi CLI: on PATH, or the one tools/realengine/pulumi/build.sh builds."""
    built = sorted(glob.glob(os.path.expanduser("~/.cache/infershift/realengine/pulumi-*/bin/pulumi")))
    return shutil.which("pulumi") or (built[-1] if built else None)


def _needs_pulumi() -> str:
    cli = _pulumi()
    if cli is None:
        pytest.skip("no Pulumi CLI (on PATH or built by tools/realengine/pulumi/build.sh)")
    assert cli is not None
    return cli


@pytest.fixture
def project(tmp_path):
    """A Pulumi project (file backend, passphrase secrets, no network) holding the rollout stack."""
    (tmp_path / "stacks").mkdir()
    (tmp_path / "Pulumi.yaml").write_text("name: infershift\nruntime: python\nstackConfigDir: stacks\n")
    shutil.copyfile(TESTDATA / "Pulumi.rollout.yaml", tmp_path / "stacks" / "Pulumi.rollout.yaml")
    (tmp_path / "state").mkdir()
    (tmp_path / "home").mkdir()
    env = {"PULUMI_BACKEND_URL": f"file://{tmp_path}/state", "PULUMI_CONFIG_PASSPHRASE": "",
           "PULUMI_HOME": str(tmp_path / "home"), "PULUMI_SKIP_UPDATE_CHECK": "1",
           "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true"}
    return tmp_path, env


def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "infershift.rollout", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def _config(file: Path) -> dict:
    return yaml.safe_load(file.read_text())["config"]


def test_edits_are_pulumi_config_set_paths(project):
    cli = _needs_pulumi()
    directory, env = project
    ours = directory / "stacks" / "Pulumi.rollout.yaml"
    theirs = directory / "stacks" / "Pulumi.theirs.yaml"
    shutil.copyfile(ours, theirs)
    run_env = {**os.environ, **env}
    subprocess.run([cli, "stack", "init", "theirs", "--non-interactive"], cwd=directory, env=run_env, check=True,
                   capture_output=True)
    c = Controller(ours, "v2", MetricsPages({}), NoApply(0), log=lambda m: None)
    edits = c.edits(25, "Progressing", 0, "step 1 of 3: canary at 25%")
    edits.update(Controller(ours, "helper", MetricsPages({}), NoApply(0), log=lambda m: None)
                 .edits(100, "Progressing", 1, "step 2 of 2"))
    # the shadow phase's mirror: keys the stack file does not have yet (a new map under the route)
    shadow = Controller(ours, "v2-shadow", MetricsPages({}), NoApply(0), log=lambda m: None)
    edits.update(shadow._mirror_edits(100))
    from infershift.spec.config_path import set_many_in_file
    set_many_in_file(ours, edits)
    for path, value in edits.items():
        # the CLI types integers and booleans as --path does; `--` keeps "-1" a value
        subprocess.run([cli, "config", "set", "--path", "-s", "theirs", f"infershift:{path}", "--", str(value)],
                       cwd=directory, env=run_env, check=True, capture_output=True)
    assert _config(ours) == _config(theirs)
    assert _config(ours)["infershift:routes"]["route"]["backends"] == {"pool-v1": 75, "pool-v2": 25}
    assert _config(ours)["infershift:routes"]["route"]["mirror"] == {"percent": 100, "kind": "InferencePool",
                                                                      "name": "pool-v2"}


def test_the_automation_api_applies_the_controllers_edit(project):
    cli = _needs_pulumi()
    directory, env = project
    subprocess.run([cli, "stack", "init", "rollout", "--non-interactive"], cwd=directory, env={**os.environ, **env},
                   check=True, capture_output=True)
    import pulumi

    from infershift.rollout.automation import AutomationApply

    def program() -> None:
        # what the stack's program would read: the route's weights from the stack config
        pulumi.export("weights", pulumi.Config("infershift").require_object("routes")["route"]["backends"])

    lines: list[str] = []
    applier = AutomationApply(str(Path(cli).parent.parent), env, log=lines.append, program=program)
    file = directory / "stacks" / "Pulumi.rollout.yaml"
    c = Controller(file, "v2", MetricsPages({}), applier, log=lines.append)
    c.write(25, "Progressing", 0, "step 1 of 3")
    assert applier.stack(file).outputs()["weights"].value == {"pool-v1": 75, "pool-v2": 25}
    c.write(50, "Progressing", 1, "step 2 of 3")
    assert applier.stack(file).outputs()["weights"].value == {"pool-v1": 50, "pool-v2": 50}
    # its output is streamed to the log, and the result reported
    assert any(line.startswith("pulumi up: ") and "weights" in line for line in lines)
    assert any("applied: pulumi up: succeeded" in line for line in lines), lines[-5:]


def test_the_automation_api_without_a_cli_says_so(tmp_path, monkeypatch):
    from infershift.rollout.automation import AutomationApply

    (tmp_path / "stacks").mkdir()
    (tmp_path / "Pulumi.yaml").write_text("name: infershift\nruntime: python\n")
    file = tmp_path / "stacks" / "Pulumi.rollout.yaml"
    shutil.copyfile(TESTDATA / "Pulumi.rollout.yaml", file)
    monkeypatch.setenv("PATH", str(tmp_path))  # no pulumi here
    with pytest.raises(RolloutError, match="Automation API runs the Pulumi CLI, and there is none on PATH"):
        AutomationApply().apply(file)


def test_status_and_abort(tmp_path):
    file = tmp_path / "Pulumi.rollout.yaml"
    shutil.copyfile(TESTDATA / "Pulumi.rollout.yaml", file)
    c = Controller(file, "v2", MetricsPages({}), NoApply(0), log=lambda m: None)
    c.write(50, "Progressing", 1, "step 2 of 3: canary at 50%")
    out = _cli("status", "v2", "-s", str(file), "--json")
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout)[0]
    assert (row["phase"], row["step"], row["weights"]) == ("Progressing", 1, {"pool-v1": 50, "pool-v2": 50})
    out = _cli("abort", "v2", "-s", str(file))
    assert out.returncode == 0, out.stderr
    config = _config(file)
    assert config["infershift:routes"]["route"]["backends"] == {"pool-v1": 100, "pool-v2": 0}
    assert config["infershift:rollouts"]["v2"]["status"]["phase"] == "Aborted"
    text = _cli("status", "-s", str(file)).stdout
    assert "v2: route route: Aborted" in text and "helper: pool pool-v1 model helper: Pending" in text
    # an aborted rollout does not run again until its status is removed
    out = _cli("run", "v2", "-s", str(file), "--apply", "watch", "--metrics", "pool-v1=http://127.0.0.1:9/metrics",
               "--gateway", "http://127.0.0.1:9")
    assert out.returncode == 2 and "rollouts.v2 is Aborted" in out.stderr


def test_cli_errors_name_what_is_wrong(tmp_path):
    file = tmp_path / "Pulumi.rollout.yaml"
    shutil.copyfile(TESTDATA / "Pulumi.rollout.yaml", file)
    out = _cli("run", "nope", "-s", str(file), "--apply", "watch")
    assert out.returncode == 2 and "no rollout named 'nope' (rollouts: helper, v2, v2-shadow)" in out.stderr
    out = _cli("run", "v2", "-s", str(file), "--apply", "watch")
    assert out.returncode == 2 and "--prometheus URL or --metrics POOL=URL" in out.stderr
    # a person's edit of the weights the status records is refused, not overwritten
    c = Controller(file, "v2", MetricsPages({}), NoApply(0), log=lambda m: None)
    c.write(25, "Paused", 0, "paused")
    from infershift.spec.config_path import set_in_file
    set_in_file(file, "routes.route.backends.pool-v2", 40)
    with pytest.raises(RolloutError, match="someone edited them"):
        Controller(file, "v2", MetricsPages({}), NoApply(0), log=lambda m: None).run()
