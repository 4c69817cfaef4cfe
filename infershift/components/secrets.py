"""Secrets: the stack's Kubernetes Secrets, from values set with `pulumi config set --secret`.

Values enter as Pulumi secrets (`Output.secret`), so the engine encrypts them in the state and
the render prints `[secret]`; manifests reference them only by name (`secretKeyRef`,
`imagePullSecrets`), never by value.
"""
import base64
import json
from typing import NotRequired, TypedDict

import pulumi

from .checks import check
from .enums import component_args
from .objects import build_manifests, child_opts, declare, keep_options


class RegistryCredentialArgs(TypedDict):
    server: pulumi.Input[str]
    username: pulumi.Input[str]
    password: pulumi.Input[str]
    """A string or a secret `Output`."""


class SecretsArgs(TypedDict):
    namespace: NotRequired[pulumi.Input[str]]
    secrets: NotRequired[dict[str, dict[str, pulumi.Input[str]]]]
    """Secret name -> key -> value (strings or secret Outputs): Opaque Secrets."""
    registry_credentials: NotRequired[dict[str, RegistryCredentialArgs]]
    """Secret name -> registry credentials: kubernetes.io/dockerconfigjson Secrets."""


def _secret(value: pulumi.Input[str]) -> pulumi.Output:
    return pulumi.Output.secret(value)


def dockerconfigjson(server: str, username: str, password: str) -> str:
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    return json.dumps({"auths": {server: {"username": username, "password": password, "auth": auth}}})


def manifests(a: SecretsArgs) -> list[dict]:
    ns = a.get("namespace", "default")
    out = []
    for name, data in sorted((a.get("secrets") or {}).items()):
        out.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
                    "type": "Opaque", "stringData": {k: _secret(v) for k, v in sorted(data.items())}})
    for name, cred in sorted((a.get("registry_credentials") or {}).items()):
        config = pulumi.Output.all(cred["server"], cred["username"], cred["password"]).apply(
            lambda v: dockerconfigjson(*v))
        out.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
                    "type": "kubernetes.io/dockerconfigjson", "stringData": {".dockerconfigjson": _secret(config)}})
    return out


class Secrets(pulumi.ComponentResource):
    """`names` are the Secrets declared (what `secretKeyRef` / `imagePullSecrets` name)."""

    names: pulumi.Output[list[str]]
    """The Secrets declared (what `secretKeyRef` / `imagePullSecrets` name)."""

    def __init__(self, name: str, args: SecretsArgs, opts: pulumi.ResourceOptions | None = None):
        args = component_args(args, SecretsArgs)
        check("Secrets", name, args)  # before anything is declared
        super().__init__("infershift:index:Secrets", name, None, opts)
        keep_options(self, opts)
        self.objects = {}
        for layout, m in build_manifests(args, manifests):
            secret = layout["metadata"]["name"]
            self.objects[secret] = declare(f"{name}-{secret}", m, child_opts(self))
        names = sorted(self.objects)
        self.names = pulumi.Output.from_input(names)
        self.register_outputs({"names": names})
