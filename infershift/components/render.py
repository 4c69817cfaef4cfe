"""Offline render: run the Pulumi program under Pulumi's mock runtime (no CLI, cloud or cluster)
and write what it declares — every Kubernetes object as YAML, every cloud resource's inputs as JSON.

    python -m infershift.components.render --stack ack-canary --out out/ack-canary

Each render runs in a fresh thread: Pulumi keeps its runtime state in context variables,
which a new thread starts empty, so renders in one process do not see each other.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PROJECT = "infershift"
# The program's pulumi.log messages (stack warnings) under mocks.
LOG = logging.getLogger("infershift.render")


@dataclass(frozen=True)
class RenderedResource:
    type: str
    """Pulumi type token, e.g. `kubernetes:apps/v1:Deployment`, `alicloud:cs/nodePool:NodePool`."""
    name: str
    """Pulumi resource name."""
    inputs: dict
    custom: bool
    provider: str = ""
    """The provider reference (`urn::id`) the resource was registered with."""
    parent: str = ""
    """The parent's URN (empty: the stack)."""
    protect: bool = False
    retain_on_delete: bool = False
    ignore_changes: tuple[str, ...] = ()
    read: bool = False
    """A read of an existing object (`.get`), not a declaration."""
    depends_on: tuple[str, ...] = ()
    """URNs of the resources it explicitly depends on."""

    @property
    def is_kubernetes(self) -> bool:
        """A whole Kubernetes object this stack owns (not a patch or a read of someone else's)."""
        return self.custom and self.type.startswith("kubernetes:") and not self.is_patch and not self.read

    @property
    def is_patch(self) -> bool:
        """A server-side-apply patch (`kubernetes:apps/v1:DeploymentPatch`, ...)."""
        return self.custom and self.type.startswith("kubernetes:") and self.type.endswith("Patch")

    @property
    def manifest(self) -> dict:
        return self.inputs

    @property
    def kind(self) -> str:
        return self.inputs.get("kind", "")


@dataclass
class Render:
    resources: list[RenderedResource]
    exports: dict

    @property
    def objects(self) -> list[dict]:
        """Every Kubernetes object."""
        return [r.manifest for r in self.resources if r.is_kubernetes]

    @property
    def patches(self) -> list[dict]:
        """Patches of objects the stack does not own (e.g. ACK's add-on controller)."""
        return [r.manifest for r in self.resources if r.is_patch]

    @property
    def cloud(self) -> list[RenderedResource]:
        """Providers and cloud resources (node pools)."""
        return [r for r in self.resources if r.custom and not r.type.startswith("kubernetes:")]

    def find(self, kind: str, name: str | None = None) -> list[dict]:
        return [o for o in self.objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]

    def one(self, kind: str, name: str) -> dict:
        found = self.find(kind, name)
        if len(found) != 1:
            raise KeyError(f"{len(found)} {kind} objects named {name!r}")
        return found[0]


SECRET_SIG = "4dabf18193072939515e22adb298388d"
_TOP = ("apiVersion", "kind", "metadata")


def _plain(value: Any, top: bool = True) -> Any:
    """Inputs as plain data: integral floats (protobuf Struct numbers) back to ints, secrets
    redacted, map keys sorted for stable diffs (a manifest's top keys in the usual order)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        if SECRET_SIG in value:
            return "[secret]"
        first = [k for k in _TOP if k in value] if top else []
        keys = first + sorted(k for k in value if k not in first)
        return {k: _plain(value[k], False) for k in keys}
    if isinstance(value, list):
        return [_plain(v, False) for v in value]
    return value


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (chat templates, the picker's config) as literal blocks."""


_Dumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def _mocks():
    import pulumi
    from pulumi.runtime.mocks import MockMonitor

    class Monitor(MockMonitor):
        """Notes each registration's parent, which the mock resource args do not carry."""

        def RegisterResource(self, request):
            # Registrations run on worker threads; new_resource runs on the same one.
            self.mocks.local.parent = request.parent
            self.mocks.local.options = (bool(request.protect), bool(request.retainOnDelete),
                                        tuple(request.ignoreChanges), tuple(request.dependencies))
            return super().RegisterResource(request)

    class Mocks(pulumi.runtime.Mocks):
        def __init__(self):
            self.registered: list[RenderedResource] = []
            self.local = threading.local()
            self.monitor = Monitor(self)

        def new_resource(self, args: pulumi.runtime.MockResourceArgs):
            protect, retain, ignore, deps = getattr(self.local, "options", (False, False, (), ()))
            read = bool(args.resource_id)
            if read:  # ReadResource carries no parent in the mock args; the registration's is stale
                protect, retain, ignore, deps = False, False, (), ()
            self.registered.append(RenderedResource(args.typ, args.name, _plain(args.inputs), bool(args.custom),
                                                     args.provider or "", "" if read else getattr(self.local, "parent", ""),
                                                     protect, retain, ignore, read, deps))
            if read:
                return [args.resource_id, args.inputs]
            if args.typ == "docker-build:index:Image":
                # No build offline: the ref a push would return, with a stand-in digest derived
                # from the tag (stable across renders; a real push gives the image's own).
                tag = (args.inputs.get("tags") or ["unnamed"])[0]
                digest = hashlib.sha256(f"offline-render:{tag}".encode()).hexdigest()
                return [f"{args.name}-id", {**args.inputs, "ref": f"{tag}@sha256:{digest}", "digest": f"sha256:{digest}"}]
            return [f"{args.name}-id", args.inputs]

        def call(self, args: pulumi.runtime.MockCallArgs):
            # The cluster look-ups the platforms' Cluster components make; nothing else is invoked.
            from infershift.platforms import REGISTRY

            for platform in REGISTRY.values():
                answer = platform.mock_call(args.token, dict(args.args))
                if answer is not None:
                    return answer
            raise NotImplementedError(f"render has no mock for invoke {args.token}")

    return Mocks()


def render_program(program: Callable[[], Any], stack: str = "render", config: dict | None = None,
                   project: str = PROJECT, secret_keys: list[str] | None = None) -> Render:
    """Run `program` under mocks with `config` ({"ns:key": value}, structured values as the engine
    passes them: JSON strings) and return what it registered."""
    import pulumi
    from pulumi.runtime import stack as pstack

    result: dict = {}

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            mocks = _mocks()
            pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False, monitor=mocks.monitor,
                                     logger=LOG)
            pulumi.runtime.set_all_config({k: v if isinstance(v, str) else json.dumps(v)
                                           for k, v in (config or {}).items()}, secret_keys or [])
            box: dict = {}
            loop.run_until_complete(pstack.run_pulumi_func(lambda: box.setdefault("exports", program())))
            exports = box.get("exports") or {}
            result["render"] = Render(mocks.registered, _resolve(loop, exports))
        except BaseException as err:  # noqa: BLE001 re-raised in the caller's thread
            result["error"] = err
        finally:
            loop.close()

    thread = threading.Thread(target=run, name=f"render-{stack}")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["render"]


def _resolve(loop: asyncio.AbstractEventLoop, exports: Any) -> dict:
    import pulumi

    if not isinstance(exports, dict):
        return {}
    out = {}
    for key, value in exports.items():
        if isinstance(value, pulumi.Output):
            value = loop.run_until_complete(value.future())
        out[key] = value
    return out


def stack_config(values: dict) -> dict:
    return {f"{PROJECT}:{k}": json.dumps(v) for k, v in values.items()}


def render_values(values: dict, stack: str = "render", secret_keys: set[str] | None = None) -> Render:
    """Render `infershift:` config values (namespace stripped; `secret_keys`: those the engine
    would mark secret) with the stack program."""
    from . import program

    return render_program(program.main, stack, stack_config(values),
                          secret_keys=[f"{PROJECT}:{k}" for k in sorted(secret_keys or ())])


def render_stack(name: str, stacks_dir: Path | None = None) -> Render:
    """Validate the stack file (raising spec.StackConfigError) and render it."""
    from infershift import spec
    kwargs = {"stacks_dir": stacks_dir} if stacks_dir else {}
    spec.load_stack(name, **kwargs)  # the validation message, before the runtime starts
    from infershift.spec import strict_yaml

    document = strict_yaml.load(spec.stack_path(name, **kwargs).read_text())
    return render_values(spec.config_values(document), stack=name, secret_keys=spec.secret_config_keys(document))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def object_yaml(obj: dict) -> str:
    """One object as the render writes it (`k8s/<kind>-<name>.yaml`)."""
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)


def write(render: Render, out: Path) -> list[Path]:
    """DIR/k8s/<kind>-<name>.yaml per object and DIR/cloud/<type>-<name>.json per cloud resource."""
    written = []
    (out / "k8s").mkdir(parents=True, exist_ok=True)
    (out / "cloud").mkdir(parents=True, exist_ok=True)
    for obj in render.objects:
        path = out / "k8s" / f"{obj['kind'].lower()}-{_slug(obj['metadata']['name'])}.yaml"
        if path in written:
            raise ValueError(f"two objects would be written to {path}")
        path.write_text(object_yaml(obj))
        written.append(path)
    if render.patches:
        (out / "k8s-patches").mkdir(parents=True, exist_ok=True)
    for obj in render.patches:
        meta = obj["metadata"]
        path = out / "k8s-patches" / f"{obj['kind'].lower()}-{_slug(meta.get('namespace', ''))}-{_slug(meta['name'])}.yaml"
        path.write_text(object_yaml(obj))
        written.append(path)
    for res in render.cloud:
        token = res.type.split(":")
        kind = "provider-" + token[-1] if token[:2] == ["pulumi", "providers"] else f"{token[0]}-{token[-1]}"
        path = out / "cloud" / f"{_slug(kind)}-{_slug(res.name)}.json"
        path.write_text(json.dumps({"type": res.type, "name": res.name, "inputs": res.inputs}, indent=2,
                                   sort_keys=True) + "\n")
        written.append(path)
    (out / "exports.json").write_text(json.dumps(render.exports, indent=2) + "\n")
    return written


def main(argv: list[str] | None = None) -> int:
    from infershift import spec
    ap = argparse.ArgumentParser(prog="python -m infershift.components.render", description=__doc__.split("\n\n")[0])
    ap.add_argument("--stack", required=True, help="stack name (stacks/Pulumi.<name>.yaml)")
    ap.add_argument("--out", required=True, type=Path, help="output directory")
    ap.add_argument("--stacks-dir", type=Path, help="directory of Pulumi.<stack>.yaml files")
    ns = ap.parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    LOG.addHandler(handler)
    try:
        result = render_stack(ns.stack, ns.stacks_dir)
    except spec.StackConfigError as err:
        print(str(err), file=sys.stderr)
        return 2
    files = write(result, ns.out)
    k8s = sum(1 for f in files if f.parent.name in ("k8s", "k8s-patches"))
    print(f"{ns.stack}: {k8s} Kubernetes objects, {len(files) - k8s} cloud resources -> {ns.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
