"""InferenceService: a vLLM (or simulator) Deployment, its Service and optional chat-template ConfigMap."""
import hashlib
import math
from typing import NotRequired, TypedDict

import pulumi

from infershift import contract

from .checks import check
from .enums import component_args
from .objects import build_manifests, child_opts, declare, keep_options

CHAT_TEMPLATE_DIR = "/etc/vllm"
CHAT_TEMPLATE_KEY = "chat-template.jinja"


class SecretKeyRefArgs(TypedDict):
    secret: str
    """The Secret's name."""
    key: str
    """The key in the Secret."""


class InferenceServiceArgs(TypedDict):
    model: str
    """What vLLM loads (`--model`): a path or a hub id."""
    namespace: NotRequired[pulumi.Input[str]]
    served_model_name: NotRequired[str | None]
    image: NotRequired[pulumi.Input[str]]
    """The vLLM image (default `vllm/vllm-openai:v0.11.0`)."""
    replicas: NotRequired[int]
    port: NotRequired[int]
    labels: NotRequired[dict[str, str]]
    """Pod labels; pools select servers by these. Default `{app: <name>}`."""
    gpus: NotRequired[int]
    """`nvidia.com/gpu` per replica."""
    tensor_parallel_size: NotRequired[int]
    gpu_memory_utilization: NotRequired[float]
    max_model_len: NotRequired[int | None]
    max_num_seqs: NotRequired[int | None]
    enforce_eager: NotRequired[bool]
    trust_remote_code: NotRequired[bool]
    lora_modules: NotRequired[dict[str, str]]
    """Adapter name -> path; non-empty turns on `--enable-lora`."""
    max_loras: NotRequired[int | None]
    max_cpu_loras: NotRequired[int | None]
    max_lora_rank: NotRequired[int | None]
    chat_template: NotRequired[str | None]
    """Jinja template text; goes to a ConfigMap mounted at /etc/vllm."""
    model_pvc: NotRequired[str | None]
    """PersistentVolumeClaim with the weights (e.g. OSS- or GCS-backed); none: baked into the image."""
    model_mount_path: NotRequired[str]
    model_read_only: NotRequired[bool]
    shm_size: NotRequired[str | None]
    """Memory-backed /dev/shm size (tensor parallel needs it); None: no /dev/shm volume."""
    node_selector: NotRequired[pulumi.Input[dict[str, str]]]
    """The GPU node pool's labels (e.g. a GpuNodePool's `node_selector`)."""
    tolerate_gpu_taint: NotRequired[bool]
    env: NotRequired[dict[str, str]]
    secret_env: NotRequired[dict[str, SecretKeyRefArgs]]
    """Variable -> {secret, key}: `valueFrom.secretKeyRef` (the value never enters the manifest)."""
    image_pull_secrets: NotRequired[list[str]]
    extra_args: NotRequired[list[str]]
    cpu: NotRequired[str | None]
    memory: NotRequired[str | None]
    simulated: NotRequired[bool]
    """Run the project's simulator instead of vLLM: no GPUs, no GPU node selector."""
    sim_image: NotRequired[pulumi.Input[str] | None]
    """The simulator's image (required with `simulated`): built from infershift/sim/Dockerfile,
    e.g. by the Images component."""
    sim_profile: NotRequired[str]
    probe_period_seconds: NotRequired[int]
    """How often vLLM's `/health` is probed (default 5)."""
    startup_timeout_seconds: NotRequired[int]
    """How long model loading may take before a restart (default 2400: 40 minutes)."""
    readiness_timeout_seconds: NotRequired[int]
    """Out of the Service and the pool after failing this long (default 15)."""
    liveness_timeout_seconds: NotRequired[int]
    """Restarted after failing this long once started (default 60)."""
    await_timeout_seconds: NotRequired[int]
    """`pulumi up` waits this long for the replicas to be ready (default 2700: a GPU node scale-up,
    a multi-GB image pull and a model load; pulumi-kubernetes' own default is 10 minutes)."""
    skip_await: NotRequired[bool]
    """Do not wait for the replicas at all."""


def _sim_image(name: str, a: InferenceServiceArgs):
    if not a.get("sim_image"):
        raise ValueError(f"InferenceService {name!r}: `simulated` needs `sim_image` (build infershift/sim/Dockerfile, "
                         "or use the Images component, and pass its ref)")
    return a["sim_image"]


def served_models(name: str, a: InferenceServiceArgs) -> list[str]:
    """The model names the server answers to: its served model name (or model) and its adapters."""
    return [a.get("served_model_name") or a["model"], *(a.get("lora_modules") or {})]


def vllm_args(a: InferenceServiceArgs) -> list[str]:
    args = ["--model", a["model"]]
    served = a.get("served_model_name")
    if served:
        args += ["--served-model-name", served]
    args += ["--port", str(a.get("port", 8000))]
    args += ["--tensor-parallel-size", str(a.get("tensor_parallel_size", 1))]
    args += ["--gpu-memory-utilization", str(a.get("gpu_memory_utilization", 0.9))]
    if a.get("max_model_len"):
        args += ["--max-model-len", str(a["max_model_len"])]
    if a.get("max_num_seqs"):
        args += ["--max-num-seqs", str(a["max_num_seqs"])]
    if a.get("enforce_eager"):
        args.append("--enforce-eager")
    if a.get("trust_remote_code"):
        args.append("--trust-remote-code")
    args += _lora_args(a)
    if a.get("chat_template"):
        args += ["--chat-template", f"{CHAT_TEMPLATE_DIR}/{CHAT_TEMPLATE_KEY}"]
    return args + list(a.get("extra_args", []))


def _lora_args(a: InferenceServiceArgs, sim: bool = False) -> list[str]:
    modules = a.get("lora_modules") or {}
    if not modules:
        return []
    # The simulator always serves adapters and has no rank limit to model.
    args = [] if sim else ["--enable-lora"]
    flags = [("--max-loras", "max_loras"), ("--max-cpu-loras", "max_cpu_loras")]
    if not sim:
        flags.append(("--max-lora-rank", "max_lora_rank"))
    values: dict = dict(a)
    for flag, key in flags:
        if values.get(key):
            args += [flag, str(values[key])]
    return args + ["--lora-modules", *(f"{n}={p}" for n, p in modules.items())]


def sim_args(a: InferenceServiceArgs) -> list[str]:
    args = ["--model", a["model"]]
    served = a.get("served_model_name")
    if served:
        args += ["--served-model-name", served]
    if a.get("max_model_len"):
        args += ["--max-model-len", str(a["max_model_len"])]
    args += _lora_args(a, sim=True)
    return args + ["--profile", a.get("sim_profile", "a10-7b"), "--port", str(a.get("port", 8000)),
                   "--host", "0.0.0.0"]


def _probe(period: int, failing_seconds: int) -> dict:
    """`/health` every `period` seconds; acted on after failing for `failing_seconds`."""
    return {"httpGet": {"path": "/health", "port": "http", "scheme": "HTTP"}, "periodSeconds": period,
            "timeoutSeconds": min(5, period), "successThreshold": 1,
            "failureThreshold": max(1, math.ceil(failing_seconds / period))}


def probes(a: InferenceServiceArgs) -> dict[str, dict]:
    """vLLM answers `/health` only once the weights are loaded: the startup probe covers loading
    (readiness and liveness start after it succeeds), so readiness and liveness can react in
    seconds without killing a server that is still loading."""
    period = a.get("probe_period_seconds", 5)
    return {
        "startupProbe": _probe(period, a.get("startup_timeout_seconds", 2400)),
        "readinessProbe": _probe(period, a.get("readiness_timeout_seconds", 15)),
        "livenessProbe": _probe(period, a.get("liveness_timeout_seconds", 60)),
    }


def await_annotations(a: InferenceServiceArgs) -> dict[str, str]:
    if a.get("skip_await"):
        return {contract.PULUMI_SKIP_AWAIT: "true"}
    return {contract.PULUMI_TIMEOUT_SECONDS: str(a.get("await_timeout_seconds", 2700))}


def manifests(name: str, a: InferenceServiceArgs) -> list[dict]:
    """The Deployment, Service and (with a chat template) ConfigMap, as plain manifests."""
    ns = a.get("namespace", "default")
    port = a.get("port", 8000)
    labels = dict(a.get("labels") or {"app": name})
    # Selectors are immutable: they use the stable per-service label only; the labels pools
    # select on live on the pod template (and the objects' metadata), free to change.
    selector = {contract.SERVICE_LABEL: name}
    pod_labels = {**labels, **selector}
    pod_annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(a.get("port", 8000)),
                       "prometheus.io/path": "/metrics"}
    simulated = a.get("simulated", False)
    template_cm = f"{name}-chat-template"
    out: list[dict] = []

    mounts: list[dict] = []
    volumes: list[dict] = []
    if not simulated and a.get("shm_size"):
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})
        volumes.append({"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": a["shm_size"]}})
    if not simulated and a.get("model_pvc"):
        mounts.append({"name": "model", "mountPath": a.get("model_mount_path", "/models"),
                       "readOnly": a.get("model_read_only", True)})
        volumes.append({"name": "model", "persistentVolumeClaim": {"claimName": a["model_pvc"],
                                                                   "readOnly": a.get("model_read_only", True)}})
    if not simulated and a.get("chat_template"):
        mounts.append({"name": "chat-template", "mountPath": CHAT_TEMPLATE_DIR, "readOnly": True})
        volumes.append({"name": "chat-template", "configMap": {"name": template_cm}})
        out.append({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": template_cm, "namespace": ns, "labels": labels},
                    "data": {CHAT_TEMPLATE_KEY: a["chat_template"]}})
        digest = hashlib.sha256(str(a["chat_template"]).encode()).hexdigest()[:16]
        pod_annotations[contract.CHAT_TEMPLATE_HASH_ANNOTATION] = digest

    resources: dict = {}
    gpus = 0 if simulated else a.get("gpus", 1)
    requests = {k: a[k] for k in ("cpu", "memory") if a.get(k)}
    if gpus:
        resources["limits"] = {"nvidia.com/gpu": str(gpus)}
        requests["nvidia.com/gpu"] = str(gpus)
    if requests:
        resources["requests"] = requests

    container: dict = {
        "name": "sim" if simulated else "vllm",
        "image": _sim_image(name, a) if simulated else a.get("image", "vllm/vllm-openai:v0.11.0"),
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "infershift.sim"] if simulated else ["python3", "-m", "vllm.entrypoints.openai.api_server"],
        "args": sim_args(a) if simulated else vllm_args(a),
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        **probes(a),
    }
    env: list[dict] = [{"name": k, "value": v} for k, v in (a.get("env") or {}).items()]
    env += [{"name": k, "valueFrom": {"secretKeyRef": {"name": ref["secret"], "key": ref["key"]}}}
            for k, ref in sorted((a.get("secret_env") or {}).items())]
    if env:
        container["env"] = env
    if resources:
        container["resources"] = resources
    if mounts:
        container["volumeMounts"] = mounts

    pod_spec: dict = {"containers": [container], "terminationGracePeriodSeconds": 30}
    if a.get("image_pull_secrets"):
        pod_spec["imagePullSecrets"] = [{"name": n} for n in a.get("image_pull_secrets") or []]
    if volumes:
        pod_spec["volumes"] = volumes
    if gpus and a.get("node_selector"):
        pod_spec["nodeSelector"] = dict(a["node_selector"])  # type: ignore[arg-type]  # plain here (build_manifests)
    if gpus and a.get("tolerate_gpu_taint", True):
        pod_spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]

    out.append({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": await_annotations(a)},
        "spec": {
            "replicas": a.get("replicas", 1),
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": pod_annotations},
                "spec": pod_spec,
            },
        },
    })
    # Node drains (GKE auto-upgrades, ACK node repairs) evict one replica at a time; with one
    # replica the eviction still goes through (maxUnavailable, not minAvailable), never blocking a drain.
    out.append({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                "metadata": {"name": name, "namespace": ns, "labels": labels},
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}}})
    out.append({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"type": "ClusterIP", "selector": selector,
                 "ports": [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}]},
    })
    return out


_ROLES = {"ConfigMap": "chat-template", "Deployment": "deployment", "Service": "service", "PodDisruptionBudget": "pdb"}


class InferenceService(pulumi.ComponentResource):
    """`service_name` is the Kubernetes Service; `labels` are the pod labels pools select on."""

    service_name: pulumi.Output[str]
    """The Kubernetes Service (e.g. a MirrorRoute's `mirror_to`)."""
    labels: pulumi.Output[dict[str, str]]
    """The pod labels pools select on (an InferencePool's `selector`)."""
    served_models: pulumi.Output[list[str]]
    """The model names it serves: its served model name (or model) and its LoRA adapters."""

    def __init__(self, name: str, args: InferenceServiceArgs, opts: pulumi.ResourceOptions | None = None):
        args = component_args(args, InferenceServiceArgs)
        check("InferenceService", name, args)  # before anything is declared
        super().__init__("infershift:index:InferenceService", name, None, opts)
        keep_options(self, opts)
        labels = dict(args.get("labels") or {"app": name})
        self.service_name = pulumi.Output.from_input(name)
        self.labels = pulumi.Output.from_input(labels)
        self.served_models = pulumi.Output.from_input(served_models(name, args))
        self.objects = {}
        for layout, m in build_manifests(args, lambda a: manifests(name, a), ("namespace", "node_selector")):
            role = _ROLES[layout["kind"]]
            self.objects[role] = declare(f"{name}-{role}", m, child_opts(self))
        self.register_outputs({"service_name": name, "labels": labels})
