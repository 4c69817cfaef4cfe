"""EndpointPicker: the pool's endpoint picker (Envoy ext_proc gRPC service) and what it needs to run.

Deployment (9002 gRPC ext_proc, 9003 gRPC health, 9090 metrics; non-root, read-only root
filesystem), Service, ServiceAccount, a namespaced read-only Role + RoleBinding (pods, pools,
model routing objects), the ConfigMap with its config, and a NetworkPolicy that admits only
the gateway to 9002.

ext_proc is served over TLS by default, as upstream's endpoint picker: a self-signed certificate
made at start (gateways connect with TLS and do not verify it; picker/tls.py cites how), or a
`kubernetes.io/tls` Secret mounted at /etc/picker-tls and reloaded when it is rotated; plaintext
only with `secure_serving: False`. Probes name their gRPC health service: `readiness` is SERVING
only while the pool has a ready endpoint and the picker is not draining (on SIGTERM it leaves
the Service's endpoints, serves on for 5 s, then lets the streams in flight finish, up to 20 s,
inside the 30 s grace period). With more than one replica the replicas elect a leader on a Lease
(`--leader-elect`): only the leader is ready, the Role also grants that Lease, and the rollout
and disruption settings suit a set of which one replica is ever ready (`leader_election`).
"""
from typing import Any, NotRequired, TypedDict

import pulumi
import yaml

from infershift import contract

from .api import LLMD_API, POOL_GROUPS, pool_api_version
from .checks import check
from .enums import PoolApiVersion, component_args
from .objects import build_manifests, child_opts, declare, keep_options, restricted_security_context

GRPC_PORT, HEALTH_PORT, METRICS_PORT = contract.PICKER_GRPC_PORT, contract.PICKER_HEALTH_PORT, contract.PICKER_METRICS_PORT
CONFIG_DIR = "/etc/picker"
TLS_DIR = "/etc/picker-tls"
SHUTDOWN_DELAY_S, DRAIN_TIMEOUT_S, GRACE_PERIOD_S = 5, 20, 30


class EndpointPickerArgs(TypedDict):
    pool_name: str
    pool_api_version: PoolApiVersion
    """`v1` or `v1alpha2`: which pool and model-routing kinds it reads."""
    namespace: NotRequired[pulumi.Input[str]]
    image: NotRequired[pulumi.Input[str]]
    """The picker's image (required): built from infershift/picker/Dockerfile, e.g. by the Images component."""
    image_pull_secrets: NotRequired[list[str]]
    """Secrets the kubelet pulls the image with (a private registry)."""
    replicas: NotRequired[int]
    """More than 1 turns leader election on (see `leader_election`)."""
    leader_election: NotRequired[bool | None]
    """Active-passive replicas (picker/leader.py): the replicas elect a leader on a Lease and only
    the leader is ready, so the gateway reaches one picker with one view of the pool. Default
    (None): on when `replicas` > 1; False with replicas > 1: active-active (each replica routes on
    its own view, flow control and prefix index per replica)."""
    cpu: NotRequired[str]
    memory: NotRequired[str]
    config: NotRequired[pulumi.Input[dict[str, Any]]]
    """The picker's config file content (see picker/README.md)."""
    gateway_peers: NotRequired[list[dict[str, Any]]]
    """NetworkPolicy peers allowed to reach 9002 (the gateway's proxies: NetworkPolicyPeer objects)."""
    secure_serving: NotRequired[bool]
    """TLS on 9002 (default true, as upstream's picker); false: plaintext h2c, for a gateway set up
    to speak plaintext to the picker."""
    cert_secret: NotRequired[str | None]
    """A `kubernetes.io/tls` Secret (tls.crt, tls.key) for 9002, reloaded on rotation; default: a
    self-signed certificate made at start."""
    await_timeout_seconds: NotRequired[int | None]
    """`pulumi up` waits this long for the picker to be ready, i.e. for a model server of its pool
    to be ready (default 2700, as the model servers' own wait); None: it does not wait."""


def _image(a: EndpointPickerArgs):
    if not a.get("image"):
        raise ValueError(f"EndpointPicker for pool {a['pool_name']!r}: `image` is required (build "
                         "infershift/picker/Dockerfile, or use the Images component, and pass its ref)")
    return a["image"]


def picker_name(pool: str) -> str:
    return f"{pool}-epp"


def leader_election(a: EndpointPickerArgs) -> bool:
    le = a.get("leader_election")
    return a.get("replicas", 1) > 1 if le is None else bool(le)


def _await(a: EndpointPickerArgs) -> dict[str, str]:
    """Ready only once a model server of the pool is: `pulumi up` waits as long as for them. With
    leader election one replica is ever ready (the leader), so the Deployment never counts as
    complete; `pulumi up` waits for that one ready replica instead of its default rollout check."""
    timeout = a.get("await_timeout_seconds", 2700)
    if timeout is None:
        return {contract.PULUMI_SKIP_AWAIT: "true"}
    if leader_election(a):
        return {contract.PULUMI_WAIT_FOR: "jsonpath={.status.readyReplicas}=1",
                contract.PULUMI_TIMEOUT_SECONDS: str(timeout)}
    return {contract.PULUMI_TIMEOUT_SECONDS: str(timeout)}


def lease_rules(namespace: str, pool: str) -> list[dict]:
    """What leader election needs (picker/leader.py): get and update its own Lease, by name, and
    create it (RBAC cannot limit create to a name)."""
    group = "coordination.k8s.io"
    return [{"apiGroups": [group], "resources": ["leases"], "resourceNames": [contract.picker_lease_name(namespace, pool)],
             "verbs": ["get", "update"]},
            {"apiGroups": [group], "resources": ["leases"], "verbs": ["create"]}]


# Exactly what the picker lists and watches (picker/k8s.py): its own pool, by name (a
# `metadata.name` field selector, which RBAC checks against resourceNames), and the
# model-routing kinds of its pool's API. Read-only, this namespace only.
ROUTING_RULES = {
    "v1alpha2": [{"apiGroups": [POOL_GROUPS["v1alpha2"]], "resources": ["inferencemodels"],
                  "verbs": ["get", "list", "watch"]}],
    "v1": [{"apiGroups": [LLMD_API.split("/")[0]], "resources": ["inferenceobjectives", "inferencemodelrewrites"],
            "verbs": ["get", "list", "watch"]}],
}


def manifests(a: EndpointPickerArgs) -> list[dict]:
    pool, ns, version = a["pool_name"], a.get("namespace", "default"), a["pool_api_version"]
    name = picker_name(pool)
    labels = {"app": name, "infershift.io/pool": pool}
    meta = {"name": name, "namespace": ns, "labels": labels}
    config = a.get("config") or {"pool": {"name": pool, "namespace": ns},
                                 "kubernetes": {"poolApiVersion": pool_api_version(version)}}
    secret = a.get("cert_secret")
    if not a.get("secure_serving", True):
        if secret:
            raise ValueError(f"picker of pool {pool}: a certificate Secret needs secure serving")
        tls_args = ["--secure-serving=false"]
    elif secret:
        tls_args = ["--cert-path", TLS_DIR, "--enable-cert-reload"]
    else:
        tls_args = []  # the picker's default: TLS with a self-signed certificate
    container = {
        "name": "picker",
        "image": _image(a),
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "infershift.picker"],
        "args": ["--config", f"{CONFIG_DIR}/config.yaml", "--pool-name", pool, "--pool-namespace", ns,
                 "--host", "0.0.0.0", *tls_args, "--shutdown-delay", f"{SHUTDOWN_DELAY_S}s",
                 "--drain-timeout", f"{DRAIN_TIMEOUT_S}s"],
        "ports": [{"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
                  {"name": "grpc-health", "containerPort": HEALTH_PORT, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        # The probes name the picker's health services (picker/health.py), as upstream's chart does;
        # gRPC probes are plaintext, and so is 9003.
        "readinessProbe": {"grpc": {"port": HEALTH_PORT, "service": "readiness"}, "periodSeconds": 2},
        "livenessProbe": {"grpc": {"port": HEALTH_PORT, "service": "liveness"}, "initialDelaySeconds": 5,
                          "periodSeconds": 10},
        "resources": {"requests": {"cpu": a.get("cpu", "500m"), "memory": a.get("memory", "512Mi")},
                      "limits": {"memory": a.get("memory", "512Mi")}},
        "securityContext": restricted_security_context(),
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"},
                         *([{"name": "tls", "mountPath": TLS_DIR, "readOnly": True}] if secret else [])],
    }
    elect = leader_election(a)
    if elect:
        container["args"].append("--leader-elect")
        # the holder identity names the pod (picker/leader.py default_identity)
        container["env"] = [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    gateway_peers = a.get("gateway_peers") or []
    objects: list[dict] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta, "rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [POOL_GROUPS[version]], "resources": ["inferencepools"], "resourceNames": [pool],
             "verbs": ["get", "list", "watch"]},
            *ROUTING_RULES[version],
            *(lease_rules(str(ns), pool) if elect else []),
        ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
         "data": {"config.yaml": yaml.safe_dump(config, sort_keys=False)}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {**meta, "annotations": _await(a)}, "spec": {
            "replicas": a.get("replicas", 1),
            # With leader election only the leader is ever ready, so a rolling update that keeps
            # any replica available would wait on the old leader forever (upstream's chart uses
            # Recreate for this, config/charts/routerlib/templates/_deployment.yaml). Here the new
            # replicas start in full while the old ones go: the old leader releases its Lease on
            # SIGTERM and serves its open streams through the drain while a new one takes over.
            **({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": "100%"}}}
               if elect else {}),
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": {
                    "prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT),
                    "prometheus.io/path": "/metrics"}},
                "spec": {
                    "serviceAccountName": name,
                    **({"imagePullSecrets": [{"name": s} for s in a.get("image_pull_secrets") or []]}
                       if a.get("image_pull_secrets") else {}),
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "terminationGracePeriodSeconds": GRACE_PERIOD_S,
                    "containers": [container],
                    "volumes": [{"name": "config", "configMap": {"name": name}},
                                {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                                *([{"name": "tls", "secret": {"secretName": secret}}] if secret else [])],
                },
            },
        }},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": {
            "type": "ClusterIP", "selector": labels,
            "ports": [{"name": "grpc-ext-proc", "port": GRPC_PORT, "targetPort": GRPC_PORT, "protocol": "TCP",
                       "appProtocol": "http2"},
                      {"name": "grpc-health", "port": HEALTH_PORT, "targetPort": HEALTH_PORT, "protocol": "TCP"},
                      {"name": "metrics", "port": METRICS_PORT, "targetPort": METRICS_PORT, "protocol": "TCP"}],
        }},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta, "spec": {
            "podSelector": {"matchLabels": labels},
            "policyTypes": ["Ingress"],
            # ext_proc from the gateway only (no peers given: from nobody); health probes
            # and metric scrapes carry no request data.
            "ingress": ([{"from": gateway_peers, "ports": [{"port": GRPC_PORT, "protocol": "TCP"}]}]
                        if gateway_peers else [])
            + [{"ports": [{"port": HEALTH_PORT, "protocol": "TCP"}, {"port": METRICS_PORT, "protocol": "TCP"}]}],
        }},
    ]
    if not elect:
        # Node drains take one picker replica at a time and never wait on a single one. Not with
        # leader election: only the leader is ever healthy, so any budget either blocks evicting
        # it for good or allows everything; the standbys are the protection there.
        objects.append({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta,
                        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels}}})
    return objects


_ROLES = {"ServiceAccount": "sa", "Role": "role", "RoleBinding": "rolebinding", "ConfigMap": "config",
          "Deployment": "deployment", "Service": "service", "NetworkPolicy": "netpol", "PodDisruptionBudget": "pdb"}


class EndpointPicker(pulumi.ComponentResource):
    """`service_name` is the Service the InferencePool's picker reference names."""

    service_name: pulumi.Output[str]
    """The picker's Service (what the pool's `endpointPickerRef` names)."""

    def __init__(self, name: str, args: EndpointPickerArgs, opts: pulumi.ResourceOptions | None = None):
        args = component_args(args, EndpointPickerArgs)
        check("EndpointPicker", name, args)  # before anything is declared
        super().__init__("infershift:index:EndpointPicker", name, None, opts)
        keep_options(self, opts)
        service = picker_name(args["pool_name"])
        self.service_name = pulumi.Output.from_input(service)
        self.objects = {}
        for layout, m in build_manifests(args, manifests, ("namespace", "config")):
            role = _ROLES[layout["kind"]]
            self.objects[role] = declare(f"{name}-{role}", m, child_opts(self))
        self.register_outputs({"service_name": service})
