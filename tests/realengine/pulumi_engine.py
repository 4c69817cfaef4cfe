"""The real Pulumi engine for tests: the CLI and the pulumi-kubernetes provider that
tools/realengine/pulumi/build.sh builds from their Go modules, a file backend in a temp dir, a
passphrase secrets provider, and no network.

The program runs as it does under `pulumi up` but for one piece. The Python language host
(`github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3`) cannot be built here: the
module proxy these machines reach answers 403 "This module version is not available" for every
version of it. So each preview or update starts this file as a script (`serve`), which serves the
Python SDK's own LanguageRuntime implementation (`pulumi.automation._server.LanguageServer`, what
the SDK's Automation API serves for inline programs) on a loopback port, running the project's
`__main__.py` with runpy as the host's exec script does; the CLI connects to it with its `--client`
flag (pkg/cmd/pulumi/operations/io.go readProjectForUpdate: the project's runtime becomes that
address). Engine, provider, state, config and diff are the real ones.

No download can happen: PULUMI_HOME is an empty temp dir (no plugin cache), the provider is found
on PATH as an ambient plugin (sdk/go/common/workspace/plugins.go getPluginInfoAndPath: a plugin
on $PATH is used whatever version the program asks for, unless PULUMI_IGNORE_AMBIENT_PLUGINS),
PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION makes a missing plugin an error instead of an install
(pkg/resource/deploy/providers/registry.go loadProvider), and any download URL is overridden to a
closed loopback port, so an attempt fails loudly instead of reaching out.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "tools" / "realengine" / "pulumi" / "build.sh"
PROJECT = "infershift"
PASSPHRASE = "infershift-realengine-tests"
# A closed port: anything that tries to download a plugin gets "connection refused".
NO_DOWNLOADS = "^.*=http://127.0.0.1:9/no-plugin-downloads"


def toolchain_bin() -> Path | None:
    """The built bin dir (pulumi, pulumi-resource-kubernetes), or None when not built yet."""
    out = subprocess.run(["bash", str(BUILD_SCRIPT), "--where"], capture_output=True, text=True)
    if out.returncode != 0:
        return None
    path = Path(out.stdout.strip())
    return path if (path / "pulumi").is_file() and (path / "pulumi-resource-kubernetes").is_file() else None


class EngineError(AssertionError):
    """A CLI command that failed: its command line, exit code, and what it printed."""

    def __init__(self, argv: list[str], result: subprocess.CompletedProcess):
        self.argv, self.returncode, self.stdout, self.stderr = argv, result.returncode, result.stdout, result.stderr
        super().__init__(f"`{' '.join(argv)}` exited {result.returncode}\n--- stdout\n{result.stdout[-6000:]}"
                         f"\n--- stderr\n{result.stderr[-6000:]}")


@dataclass
class Step:
    """One step of the engine's plan (`pulumi preview --json` .steps[])."""

    op: str
    urn: str
    diff_reasons: list[str] = field(default_factory=list)
    replace_reasons: list[str] = field(default_factory=list)
    detailed_diff: dict = field(default_factory=dict)
    new: dict = field(default_factory=dict)
    old: dict = field(default_factory=dict)

    @property
    def type(self) -> str:
        return self.urn.split("::")[2].split("$")[-1]

    @property
    def name(self) -> str:
        return self.urn.split("::")[3]

    @property
    def kind_name(self) -> tuple[str, str]:
        """(kind, metadata.name) of the Kubernetes object the step is for ("" for others)."""
        inputs = self.new.get("inputs") or self.old.get("inputs") or {}
        return inputs.get("kind", ""), (inputs.get("metadata") or {}).get("name", "")


@dataclass
class Preview:
    steps: list[Step]
    summary: dict
    diagnostics: list[dict]
    raw: dict

    def ops(self, *ops: str) -> list[Step]:
        return [s for s in self.steps if s.op in ops]

    def changes(self) -> list[Step]:
        """Every step that is not `same` (`read`s of existing objects are not changes either)."""
        return [s for s in self.steps if s.op not in ("same", "read")]


def _step(d: dict) -> Step:
    return Step(op=d.get("op", ""), urn=d.get("urn", ""), diff_reasons=list(d.get("diffReasons") or []),
                replace_reasons=list(d.get("replaceReasons") or []), detailed_diff=dict(d.get("detailedDiff") or {}),
                new=dict(d.get("newState") or {}), old=dict(d.get("oldState") or {}))


class Project:
    """A copy of the repository's Pulumi project (Pulumi.yaml, __main__.py, one stack file) in
    `root`, with its own PULUMI_HOME and file backend; every command goes through the real CLI."""

    def __init__(self, root: Path, bin_dir: Path, stack: str, stack_config: dict, *,
                 python: str = sys.executable, timeout: float = 600):
        self.root, self.bin_dir, self.stack, self.python, self.timeout = root, bin_dir, stack, python, timeout
        self.dir = root / "project"
        self.state = root / "state"
        self.home = root / "pulumi-home"
        self.logs = root / "logs"
        for d in (self.dir / "stacks", self.state, self.home, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / "Pulumi.yaml", self.dir / "Pulumi.yaml")
        shutil.copyfile(REPO / "__main__.py", self.dir / "__main__.py")
        import yaml

        self.stack_file.write_text(yaml.safe_dump({"config": stack_config}, sort_keys=False))
        self._n = 0
        self.pulumi("login", f"file://{self.state}")
        self.pulumi("stack", "init", stack, "--secrets-provider", "passphrase")

    @property
    def stack_file(self) -> Path:
        return self.dir / "stacks" / f"Pulumi.{self.stack}.yaml"

    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items()
                if not k.startswith(("PULUMI_", "KUBECONFIG", "KUBERNETES_")) and k not in ("HOME",)}
        return {
            **keep,
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(self.root),
            "PULUMI_HOME": str(self.home),
            "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_SKIP_CONFIRMATIONS": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_PLUGIN_DOWNLOAD_URL_OVERRIDES": NO_DOWNLOADS,
            "PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK": "true",
            # the kubeconfig platform names its kubeconfig file; nothing else may be read
            "KUBECONFIG": str(self.root / "no-such-kubeconfig"),
        }

    def pulumi(self, *args: str, check: bool = True, program: bool = False,
               timeout: float | None = None) -> subprocess.CompletedProcess:
        """Run `pulumi ARGS` in the project; with `program`, the program is served for it. Output
        goes to files under `logs` (readable while it runs); a command that outlives `timeout` is
        killed (its process group) and fails with what it printed so far."""
        from infershift import proc

        self._n += 1
        n = self._n
        argv = [str(self.bin_dir / "pulumi"), *args]
        host = _LanguageHost(self, n) if program else None
        out_path, err_path = self.logs / f"{n:02d}-{args[0]}.stdout", self.logs / f"{n:02d}-{args[0]}.stderr"
        timed_out = False
        try:
            if host:
                argv.append(f"--client=127.0.0.1:{host.port}")
            with out_path.open("w") as out, err_path.open("w") as err:
                p = proc.spawn(argv, out=out, stderr=err, env=self.env(), cwd=self.dir, stdin=subprocess.DEVNULL)
                if not proc.wait(p, timeout or self.timeout):
                    timed_out = True
                    proc.stop_group(p, grace=10)
                returncode = p.wait()
                # the CLI's plugins (the provider) share its process group: none may outlive it
                proc.stop_group(p, grace=0)
        finally:
            if host:
                host.stop()
        result = subprocess.CompletedProcess(argv, returncode, out_path.read_text(), err_path.read_text())
        if timed_out:
            result.stderr += f"\n[killed after {timeout or self.timeout:.0f} s]"
        (self.logs / f"{n:02d}-{args[0]}.log").write_text(
            f"$ {' '.join(argv)}\n--- exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
            + (f"\n--- program\n{host.log_text()}" if host else ""))
        if (check or timed_out) and result.returncode != 0:
            raise EngineError(argv, result)
        return result

    def config_set_path(self, path: str, value: str) -> None:
        """`pulumi config set --path PATH VALUE` (the edit the stack files' comments show)."""
        self.pulumi("config", "set", "--path", f"{PROJECT}:{path}", value, "-s", self.stack)

    def config(self) -> dict:
        import yaml

        return yaml.safe_load(self.stack_file.read_text())["config"]

    def preview(self, *extra: str) -> Preview:
        out = self.pulumi("preview", "--json", "--non-interactive", "--diff", "-s", self.stack, *extra, program=True)
        return _preview(out.stdout)

    def up(self, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.pulumi("up", "--yes", "--skip-preview", "--non-interactive", "--diff", "-s", self.stack, *extra,
                           check=check, program=True)

    def destroy(self) -> subprocess.CompletedProcess:
        return self.pulumi("destroy", "--yes", "--skip-preview", "--non-interactive", "-s", self.stack, program=True)

    def exported_state(self) -> dict:
        return json.loads(self.pulumi("stack", "export", "-s", self.stack).stdout)

    def resources(self) -> list[dict]:
        return self.exported_state()["deployment"].get("resources") or []


def _preview(stdout: str) -> Preview:
    try:
        raw = json.loads(stdout)
    except json.JSONDecodeError as err:
        raise AssertionError(f"`pulumi preview --json` printed no JSON: {err}\n{stdout[-4000:]}") from None
    return Preview(steps=[_step(s) for s in raw.get("steps") or []], summary=dict(raw.get("changeSummary") or {}),
                   diagnostics=list(raw.get("diagnostics") or []), raw=raw)


class _LanguageHost:
    """This file run as `serve`: the SDK's language runtime server for one CLI command."""

    def __init__(self, project: Project, n: int):
        from infershift import proc

        self.log = project.logs / f"{n:02d}-program.log"
        self._out = self.log.open("w")
        env = {k: v for k, v in project.env().items() if k != "PATH"}
        env["PATH"] = os.environ.get("PATH", "")
        self.p = proc.spawn([project.python, str(Path(__file__).resolve()), "serve", str(project.dir)],
                            out=subprocess.PIPE, env=env, cwd=project.dir, stderr=self._out, text=True)
        assert self.p.stdout is not None
        ready, _, _ = select.select([self.p.stdout], [], [], 60)
        line = self.p.stdout.readline() if ready else ""
        if not line.strip().isdigit():
            self.stop()
            raise AssertionError(f"the language host did not start: {line!r}\n{self.log_text()}")
        self.port = int(line)

    def log_text(self) -> str:
        if not self._out.closed:
            self._out.flush()
        return self.log.read_text()

    def stop(self) -> None:
        from infershift import proc

        proc.stop_group(self.p, grace=5)
        if self.p.stdout:
            self.p.stdout.close()
        self._out.close()


def _serve(project_dir: str) -> None:
    """Serve the LanguageRuntime for the project's `__main__.py` on a free loopback port (printed)."""
    import runpy
    from concurrent import futures

    import grpc
    from pulumi.automation._server import LanguageServer
    from pulumi.runtime._grpc_settings import _GRPC_CHANNEL_OPTIONS
    from pulumi.runtime.proto import language_pb2_grpc

    os.chdir(project_dir)
    sys.path.insert(0, project_dir)
    main = str(Path(project_dir) / "__main__.py")

    def program() -> None:
        runpy.run_path(main, run_name="__main__")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=_GRPC_CHANNEL_OPTIONS)
    language_pb2_grpc.add_LanguageRuntimeServicer_to_server(LanguageServer(program), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


def wait_until(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "serve":
    _serve(sys.argv[2])
