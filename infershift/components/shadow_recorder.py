"""ShadowRecorder: the proxy a mirror to a Service sends its copies through, so the candidate's
answers are recorded (`mirrors.<m>.mirrorTo.record: true`; infershift/picker/recorder.py).

A gateway mirroring to a Service sends the copy straight to the model servers and throws the
answer away; no picker sees it. This renders a Deployment running the picker image's recorder
(`python -m infershift.picker.recorder --upstream http://<service>.<namespace>.svc:<port> --name
<service>`) and its Service; the mirror's RequestMirror filter then names the recorder's Service.
The recorder forwards each copy unchanged and logs the answer line the pickers log with
`answerLog` (`pool` = the mirrored Service's name, `shadow: true`), which `python -m
infershift.shadow report` pairs with the primary pool's picker line of the same request id.
"""
from __future__ import annotations

from typing import Any, NotRequired, TypedDict

import pulumi

from infershift import contract

from .checks import check
from .enums import component_args
from .objects import build_manifests, child_opts, declare, http_health_probes, keep_options, restricted_security_context

PORT = contract.RECORDER_PORT


class ShadowRecorderArgs(TypedDict):
    service: str
    """The mirrored Service (the candidate's servers)."""
    service_port: int
    image: pulumi.Input[str]
    """An image with infershift's picker (the recorder is one of its modules)."""
    namespace: NotRequired[pulumi.Input[str]]
    name: NotRequired[str]
    """The recorder's Deployment and Service; default `<service>-recorder`."""
    max_text_chars: NotRequired[int]
    """Answer text kept per line (default 2000, as the pickers' answerLog)."""
    image_pull_secrets: NotRequired[list[str]]


def recorder_name(a: ShadowRecorderArgs) -> str:
    return a.get("name") or f"{a['service']}-recorder"


def manifests(a: ShadowRecorderArgs) -> list[dict]:
    name, ns = recorder_name(a), a.get("namespace", "default")
    labels = {"app": name, contract.RECORDER_LABEL: a["service"]}
    meta = {"name": name, "namespace": ns, "labels": labels}
    upstream = f"http://{a['service']}.{ns}.svc:{a['service_port']}"
    container = {
        "name": "recorder",
        "image": a["image"],
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", contract.RECORDER_MODULE],
        "args": ["--upstream", upstream, "--name", a["service"], "--host", "0.0.0.0", "--port", str(PORT),
                 "--max-text-chars", str(a.get("max_text_chars", 2000))],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        **http_health_probes(PORT),
        # it holds each copy's request and answer while they pass (answers up to 4 MiB are kept
        # for the line): room for a few hundred concurrent copies
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": restricted_security_context(),
    }
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
    }
    if a.get("image_pull_secrets"):
        pod["imagePullSecrets"] = [{"name": s} for s in a.get("image_pull_secrets") or []]
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {
            "replicas": 1, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": {
            "type": "ClusterIP", "selector": labels,
            "ports": [{"name": "http", "port": PORT, "targetPort": PORT, "protocol": "TCP"}]}},
    ]


class ShadowRecorder(pulumi.ComponentResource):
    """The recording proxy (Deployment + Service) a mirror to a Service sends its copies through."""

    service_name: pulumi.Output[str]
    """The recorder's Service: what the mirror's RequestMirror names."""

    def __init__(self, name: str, args: ShadowRecorderArgs, opts: pulumi.ResourceOptions | None = None):
        args = component_args(args, ShadowRecorderArgs)
        check("ShadowRecorder", name, args)  # before anything is declared
        super().__init__("infershift:index:ShadowRecorder", name, None, opts)
        keep_options(self, opts)
        self.service_name = pulumi.Output.from_input(recorder_name(args))
        self.objects = {}
        for layout, m in build_manifests(args, manifests):
            role = {"Deployment": "deployment", "Service": "service"}[layout["kind"]]
            self.objects[role] = declare(f"{name}-{role}", m, child_opts(self))
        self.register_outputs({"service_name": recorder_name(args)})
