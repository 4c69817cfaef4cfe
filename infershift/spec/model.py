"""The typed stack config: everything under `infershift:` in a stack file.

One model per config key (`platform`, `nodePools`, `services`, `pools`, `gateway`,
`routes`, `mirrors`). Field-local rules live here; rules that relate two parts of
the stack live in `checks.py`.
"""
from __future__ import annotations

import functools
import operator
import re
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BeforeValidator, Field, create_model, field_validator, model_validator
from pydantic.alias_generators import to_camel

from infershift import contract
from infershift.platforms import REGISTRY, PlatformSpec
from infershift.platforms import Platform as PlatformPlugin

from .base import Duration, Quantity, Spec, check_name, duration_seconds
from .rollouts import Rollout

PoolApiVersion = Literal["v1", "v1alpha2"]
Criticality = Literal["Critical", "Standard", "Sheddable"]
FailureMode = Literal["FailOpen", "FailClose"]

# Weights follow Gateway API's bounds for backendRefs.
Weight = Field(ge=0, le=1_000_000)


def _weight(value: object) -> object:
    """An integer weight: `true` is not 1 (YAML/JSON booleans are refused); "50" is 50 (a string
    `pulumi config set --path` may store)."""
    if isinstance(value, bool):
        raise ValueError(f"expected an integer weight, got {str(value).lower()}")
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]+\s*", value):
        return int(value)
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"expected an integer weight, got {value}")
    return value


IntWeight = Annotated[int, BeforeValidator(_weight)]

# Kubernetes label values: at most 63 characters, alphanumerics with -_. inside (empty allowed).
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# Label keys: an optional DNS-subdomain prefix and a name of at most 63 characters.
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
# HTTP header field names (RFC 9110 token).
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Gateway API hostnames: a DNS name, optionally with a leading "*." wildcard; no scheme, port or path.
HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def check_labels(labels: dict[str, str], what: str) -> dict[str, str]:
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if not LABEL_NAME.match(name) or len(name) > 63 or (prefix and (len(prefix) > 253 or not HOSTNAME.match(prefix))):
            raise ValueError(f"{what} key {key!r} is not a valid Kubernetes label key")
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            raise ValueError(f"{what} {key}={value!r}: not a valid Kubernetes label value (at most 63 characters: "
                             "letters, digits, '-', '_', '.', starting and ending with a letter or digit)")
    return labels


def check_hostname(value: str, what: str) -> str:
    if "://" in value or "/" in value or ":" in value:
        raise ValueError(f"{what} {value!r} must be a bare host name (no scheme, port or path), e.g. 'llm.example.com'")
    if len(value) > 253 or not HOSTNAME.match(value):
        raise ValueError(f"{what} {value!r} is not a valid hostname (lowercase DNS name, optionally '*.'-prefixed)")
    return value


def _names(mapping: dict, what: str) -> dict:
    for key in mapping:
        check_name(key, what)
    return mapping


# --- platform -------------------------------------------------------------------------

# `platform:` is one of the registered plug-ins' blocks, chosen by `kind`.
if TYPE_CHECKING:  # what every platform's block has; the plug-ins add their own keys
    Platform = PlatformSpec
else:
    Platform = Annotated[functools.reduce(operator.or_, [p.spec for p in REGISTRY.values()]),
                         Field(discriminator="kind")]


# --- GPU node pools -------------------------------------------------------------------


class NodePoolBase(Spec):
    gpu_type: str = Field(min_length=1)
    """Accelerator: `nvidia-a10` on ACK; a GKE accelerator type such as `nvidia-l4`."""
    gpus_per_node: int = Field(ge=1, le=16)
    min_nodes: int = Field(0, ge=0)
    max_nodes: int = Field(ge=1)
    desired_nodes: int | None = Field(None, ge=0)
    labels: dict[str, str] = {}
    taint: bool = True
    """Taint nodes `nvidia.com/gpu=present:NoSchedule` so only GPU workloads land there."""

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        return check_labels(v, "node label")

    def block(self, kind: str):
        """The node pool's `<kind>:` block (e.g. `ack:`), or None."""
        return getattr(self, kind, None)

    @model_validator(mode="after")
    def _sizes(self) -> NodePoolBase:
        if self.min_nodes > self.max_nodes:
            raise ValueError(f"minNodes ({self.min_nodes}) is larger than maxNodes ({self.max_nodes})")
        if self.desired_nodes is not None and not self.min_nodes <= self.desired_nodes <= self.max_nodes:
            raise ValueError(f"desiredNodes ({self.desired_nodes}) is outside minNodes..maxNodes")
        return self


# Each platform with a node-pool component adds its block (`ack:`, `gke:` ...) as an optional key.
NodePool = create_model(  # type: ignore[call-overload]
    "NodePool", __base__=NodePoolBase, __module__=__name__,
    **{kind: (p.node_pool_block | None, None) for kind, p in REGISTRY.items() if p.node_pool_block is not None},
)


# --- inference services (vLLM) --------------------------------------------------------


class Lora(Spec):
    max_loras: int = Field(1, ge=1)
    """Adapters active on the GPU at once (`--max-loras`)."""
    max_cpu_loras: int | None = Field(None, ge=1)
    max_lora_rank: int | None = Field(None, ge=1)
    modules: dict[str, str] = {}
    """Adapter name -> path (`--lora-modules name=path`)."""

    @model_validator(mode="after")
    def _cpu(self) -> Lora:
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError(f"maxCpuLoras ({self.max_cpu_loras}) must be at least maxLoras ({self.max_loras})")
        return self


class ModelVolume(Spec):
    pvc: str | None = None
    """PersistentVolumeClaim holding the weights (e.g. OSS- or GCS-backed)."""
    mount_path: str = "/models"
    read_only: bool = True

    @model_validator(mode="after")
    def _abs(self) -> ModelVolume:
        if not self.mount_path.startswith("/"):
            raise ValueError(f"mountPath {self.mount_path!r} must be an absolute path")
        return self


class Resources(Spec):
    cpu: Quantity | None = None
    memory: Quantity | None = None


class SecretKeyRef(Spec):
    """One key of a Kubernetes Secret: one declared under `secrets` (values set with
    `pulumi config set --secret`) or one that already exists in the namespace."""

    secret: str
    key: str = Field(min_length=1)

    @field_validator("secret")
    @classmethod
    def _n(cls, v: str) -> str:
        return check_name(v, "secret name")


class RegistryCredential(Spec):
    """Credentials of a container registry, as a `kubernetes.io/dockerconfigjson` Secret."""

    server: str = Field(min_length=1)
    """e.g. `registry.cn-hangzhou.aliyuncs.com`, `us-docker.pkg.dev`."""
    username: str = Field(min_length=1)
    password: str = Field(min_length=1)


class Probes(Spec):
    """vLLM's health checks, in seconds of failure rather than probe counts. `/health` answers only
    once the weights are loaded, so loading is the startup probe's job; readiness and liveness
    start after it and react within seconds."""

    startup_timeout: Duration = "40m"
    """How long loading may take (image pulled, weights read, CUDA graphs captured) before the
    container is restarted."""
    period: Duration = "5s"
    readiness_timeout: Duration = "15s"
    """Taken out of the Service (and the pool's endpoints) after failing this long."""
    liveness_timeout: Duration = "60s"
    """Restarted after failing this long (after startup)."""

    @model_validator(mode="after")
    def _multiples(self) -> Probes:
        period = duration_seconds(self.period)
        if period < 1:
            raise ValueError(f"period {self.period!r} is under a second (Kubernetes probes run at most once a second)")
        for name in ("startup_timeout", "readiness_timeout", "liveness_timeout"):
            if duration_seconds(getattr(self, name)) < period:
                raise ValueError(f"{to_camel(name)} ({getattr(self, name)}) is shorter than period ({self.period})")
        return self


class Await(Spec):
    """How long `pulumi up` waits for the Deployment to become ready (pulumi-kubernetes waits 10
    minutes by default; a GPU node scale-up, a multi-GB image and a model load take longer)."""

    timeout: Duration = "45m"
    skip: bool = False
    """Do not wait at all (`pulumi.com/skipAwait`): `pulumi up` returns once the object is accepted."""


class InferenceService(Spec):
    model: str = Field(min_length=1)
    """What vLLM loads (`--model` / `vllm serve MODEL`): a path or a hub id."""
    served_model_name: str | None = None
    """Name clients send; defaults to `model`, as vLLM does."""
    image: str = "vllm/vllm-openai:v0.11.0"
    replicas: int = Field(1, ge=0)
    node_pool: str | None = None
    gpus: int = Field(1, ge=0)
    """GPUs per replica (`nvidia.com/gpu` limit)."""
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_model_len: int | None = Field(None, ge=16)
    max_num_seqs: int | None = Field(None, ge=1)
    enforce_eager: bool = False
    trust_remote_code: bool = False
    lora: Lora | None = None
    chat_template: str | None = None
    """Jinja chat template text, mounted from a ConfigMap and passed as `--chat-template`."""
    model_volume: ModelVolume | None = None
    """Where the weights come from; omitted means they are baked into the image."""
    shm_size: Quantity | None = "16Gi"
    labels: dict[str, str] = {}
    """Pod labels; pools select servers by these. Defaults to `{app: <name>}`."""
    port: int = Field(8000, ge=1, le=65535)
    extra_args: list[str] = []
    env: dict[str, str] = {}
    resources: Resources | None = None
    simulated: bool = False
    """Run the project's simulator image instead of vLLM (clusters without GPUs)."""
    sim_profile: str = "a10-7b"
    """Simulator engine profile when simulated (and in the local stack)."""
    sim_image: str | None = None
    """Simulator image when simulated on a cluster; default: the one `images` builds."""
    endpoints: list[str] | None = None
    """Local stack only: URLs of real OpenAI-compatible servers to use instead of simulators."""
    secret_env: dict[str, SecretKeyRef] = {}
    """Environment variables from Secrets (`secretKeyRef`), e.g. `HF_TOKEN: {secret: hf, key: token}`."""
    image_pull_secrets: list[str] = []
    """Secrets (`registryCredentials` or existing) the kubelet pulls the image with."""
    probes: Probes = Probes()
    await_: Await = Field(Await(), alias="await")
    """`pulumi up`'s wait for the replicas (see Await)."""
    protect: bool = False
    """Refuse to delete the service's objects (e.g. the old model kept for rollback)."""
    retain_on_delete: bool = False
    """Removing the service from the stack leaves its objects in the cluster."""

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        return check_labels(v, "label")

    @field_validator("sim_profile")
    @classmethod
    def _profile(cls, v: str) -> str:
        # The simulator's profiles are plain data, so the stack can be checked before
        # anything starts (in the cluster image and in the local stack alike).
        from infershift.sim.profiles import PROFILES

        if v not in PROFILES:
            raise ValueError(f"unknown simulator profile {v!r}; choose one of {', '.join(sorted(PROFILES))}")
        return v

    @model_validator(mode="after")
    def _tp(self) -> InferenceService:
        if self.gpus and self.tensor_parallel_size > self.gpus:
            raise ValueError(
                f"tensorParallelSize ({self.tensor_parallel_size}) is larger than gpus per replica ({self.gpus})"
            )
        return self

    @property
    def served_name(self) -> str:
        return self.served_model_name or self.model

    @property
    def adapters(self) -> list[str]:
        return list(self.lora.modules) if self.lora else []

    @property
    def serves(self) -> set[str]:
        """Every model name a request may ask this server for."""
        return {self.served_name, *self.adapters}

    def pod_labels(self, name: str) -> dict[str, str]:
        return dict(self.labels) if self.labels else {"app": name}


# --- InferencePools and their model routing -------------------------------------------


class ModelRouting(Spec):
    """One client model name: InferenceModel (v1alpha2) or InferenceObjective +
    InferenceModelRewrite (v1). Each target weight is one scalar for `pulumi config set --path`."""

    criticality: Criticality | None = None
    priority: int | None = None
    targets: dict[str, IntWeight] = {}
    """Target model (base model or LoRA adapter) -> weight. Empty: served as named."""

    @field_validator("targets")
    @classmethod
    def _weights(cls, v: dict[str, int]) -> dict[str, int]:
        for target, weight in v.items():
            if weight < 0:
                raise ValueError(f"weight of {target!r} is negative ({weight})")
            if weight > 1_000_000:
                raise ValueError(f"weight of {target!r} is over 1000000")
        if v and not any(v.values()):
            raise ValueError("all target weights are zero: no request could be routed")
        return v

    @model_validator(mode="after")
    def _one_of(self) -> ModelRouting:
        if self.criticality is not None and self.priority is not None:
            raise ValueError("give criticality or priority, not both")
        return self

    @property
    def effective_criticality(self) -> Criticality:
        if self.criticality:
            return self.criticality
        if self.priority is not None:
            return contract.criticality_of(self.priority)  # type: ignore[return-value]
        return "Standard"


# A Secret's name: an RFC 1123 subdomain (Kubernetes object names may contain dots).
_SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


class PickerTls(Spec):
    """TLS on the picker's ext_proc port, which the gateway connects to (picker/tls.py): on by
    default with a self-signed certificate, as upstream's endpoint picker; gateways connect with
    TLS and do not verify it."""

    enabled: bool = True
    """false: plaintext (h2c), only for a gateway set up to speak plaintext to the picker (Envoy AI
    Gateway's InferencePool support, for one, always connects with TLS)."""
    secret_name: str | None = None
    """A `kubernetes.io/tls` Secret (tls.crt, tls.key) in the stack's namespace, for a gateway that
    verifies the picker's certificate; mounted and reloaded when it is rotated."""

    @model_validator(mode="after")
    def _secret(self) -> PickerTls:
        if self.secret_name is not None:
            if not self.enabled:
                raise ValueError("secretName needs enabled: true (a plaintext picker has no certificate)")
            if not _SECRET_NAME.match(self.secret_name):
                raise ValueError(f"secretName {self.secret_name!r} is not a valid Kubernetes Secret name")
        return self


class Picker(Spec):
    mode: Literal["self-hosted", "managed"] = "self-hosted"
    """`self-hosted`: infershift's picker, declared by this stack. `managed`: a picker the platform
    runs for the pool (ACK's add-on deploys one per pool); the pool references `service` and
    no picker objects are created."""
    service: str | None = None
    """managed: the platform's picker Service the pool references (the seeds' `mymodel-v1-ext-proc`)."""
    image: str | None = None
    """The picker's image; default: the one `images` builds from this package's Dockerfile."""
    image_pull_secrets: list[str] = []
    """Secrets (`registryCredentials` or existing) the kubelet pulls the picker's image with."""
    replicas: int = Field(1, ge=1)
    resources: Resources = Resources(cpu="500m", memory="512Mi")
    poll_interval: Duration = "50ms"
    stale_after: Duration = "1s"
    session_header: str | None = "x-session-id"
    max_body_size: Quantity = "20Mi"
    response_sample_rate: float = Field(1.0, ge=0, le=1)
    """Share of responses whose model name was not rewritten that still return through the picker
    for per-target telemetry (status, time to first byte, latency, tokens: the upstream metrics);
    rewritten ones always do. 1 (every response, as upstream counts) costs the picker about 0.2 ms
    of CPU per request more than 0.1 (picker/BENCH.md)."""
    response_model: Literal["served", "client"] = "served"
    """The `model` of a response whose target was rewritten (a weighted split, a LoRA canary):
    `served`, the target that served it, as the model server says and the guides show (seed 004
    reads its split from it); or `client`, the name the client asked for."""
    answer_log: bool = False
    """Log every answer the picker sees (request id, target model, shadow or not, status, TTFT,
    end-to-end, output tokens, the text up to 2000 characters and a hash of all of it) as JSON lines
    on its stderr, for `python -m infershift.shadow report` (picker config `answerLog`). Turn it on
    for a mirror's primary and shadow pools to compare their answers; the text of users' answers
    then lands in the picker's logs. The local stack turns it on for every mirror's pools."""
    scheduling: dict | None = None
    """Scheduling config (plugins + profile) for the picker; its defaults when omitted. Checked
    with the picker's own parser and plugin registry (`checks._pickers`), so what passes here is
    what the picker accepts."""
    tls: PickerTls = PickerTls()
    """The ext_proc port's TLS (self-hosted pickers)."""

    @model_validator(mode="after")
    def _mode(self) -> Picker:
        if self.mode == "managed" and not self.service:
            raise ValueError("mode 'managed' needs `service`: the platform picker's Service the pool references")
        if self.mode == "self-hosted" and self.service:
            raise ValueError("`service` is for mode 'managed'; a self-hosted picker's Service is <pool>-epp")
        if self.service:
            check_name(self.service, "picker service")
        return self


class Pool(Spec):
    api_version: PoolApiVersion = "v1"
    """`v1` = inference.networking.k8s.io/v1; `v1alpha2` = inference.networking.x-k8s.io/v1alpha2."""
    selector: dict[str, str] = Field(min_length=1)
    target_ports: list[int] = Field([8000], min_length=1, max_length=8)
    failure_mode: FailureMode = "FailClose"
    picker: Picker = Picker()
    models: dict[str, ModelRouting] = {}
    protect: bool = False
    """Refuse to delete the pool and its picker (`pulumi up` fails until unset): for a pool kept
    for rollback while its route weight is 0."""
    retain_on_delete: bool = False
    """Removing the pool from the stack leaves its objects in the cluster."""

    @field_validator("selector")
    @classmethod
    def _selector(cls, v: dict[str, str]) -> dict[str, str]:
        return check_labels(v, "selector")

    @field_validator("target_ports")
    @classmethod
    def _ports(cls, v: list[int]) -> list[int]:
        for p in v:
            if not 1 <= p <= 65535:
                raise ValueError(f"target port {p} is outside 1..65535")
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate target ports {v}")
        return v

    @model_validator(mode="after")
    def _v1alpha2_single_port(self) -> Pool:
        if self.api_version == "v1alpha2" and len(self.target_ports) != 1:
            raise ValueError("apiVersion v1alpha2 has one targetPortNumber; several targetPorts need v1")
        return self


# --- gateway and routes ---------------------------------------------------------------


class Listener(Spec):
    name: str
    port: int = Field(ge=1, le=65535)
    protocol: Literal["HTTP"] = "HTTP"
    hostname: str | None = None

    @field_validator("name")
    @classmethod
    def _n(cls, v: str) -> str:
        return check_name(v, "listener name")

    @field_validator("hostname")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        return None if v is None else check_hostname(v, "listener hostname")


class ModelsListing(Spec):
    """`GET /v1/models` through the gateway (components/models_listing.py): per listener, the
    client-facing model names its routes serve and the targets behind them, in OpenAI's list
    shape, served by a small Deployment from the picker's image and routed by an HTTPRoute rule
    (Exact `/v1/models`; GET/HEAD, 405 to other methods). A listener whose routes name `/v1/models` themselves keeps it."""

    enabled: bool = True
    image: str | None = None
    """An image with infershift's picker; default: the picker image the stack builds (`images`),
    else a self-hosted pool's `picker.image`."""
    replicas: int = Field(1, ge=1)


class Gateway(Spec):
    name: str = "inference-gateway"
    class_name: str | None = None
    """GatewayClass; default: `inference-gateway` (Envoy Gateway) on ACK, `gke-l7-regional-external-managed` on GKE."""
    create_class: bool | None = None
    """Create the GatewayClass (default: on ACK and kubeconfig, where it is Envoy Gateway's)."""
    listeners: list[Listener] = Field(min_length=1)
    buffer_limit: Quantity | None = None
    """Envoy Gateway ClientTrafficPolicy connection.bufferLimit, e.g. `20Mi`."""
    request_timeout: Duration | None = None
    """Envoy Gateway BackendTrafficPolicy timeout.http.requestTimeout, e.g. `24h`."""
    json_errors: bool = True
    """Envoy Gateway: Envoy's own plain-text error replies become OpenAI error JSON (a
    BackendTrafficPolicy `responseOverride`, the local stack's table: infershift/gateway_errors.py)."""
    service_type: Literal["LoadBalancer", "ClusterIP", "NodePort"] | None = None
    """Envoy Gateway's proxy Service type (an EnvoyProxy resource); default LoadBalancer."""
    proxy_subnets: list[str] = []
    """GKE: CIDRs the managed proxies call the endpoint pickers from (the region's proxy-only
    subnet); the pickers' NetworkPolicy admits only these to port 9002."""
    await_status: bool = True
    """`pulumi up` waits for the Gateway to be Programmed and for every HTTPRoute to be Accepted
    with ResolvedRefs (a route the gateway rejects fails the update); off for a controller that
    writes no status."""
    await_timeout: Duration = "15m"
    """How long to wait for those conditions (a cloud load balancer can take minutes)."""
    models_listing: ModelsListing = ModelsListing()
    """`GET /v1/models` through the gateway (on by default)."""

    @field_validator("proxy_subnets")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        import ipaddress

        for cidr in v:
            try:
                ipaddress.ip_network(cidr)
            except ValueError:
                raise ValueError(f"{cidr!r} is not a CIDR like '10.129.0.0/23'") from None
        return v

    @field_validator("name")
    @classmethod
    def _n(cls, v: str) -> str:
        return check_name(v, "gateway name")

    @model_validator(mode="after")
    def _ports(self) -> Gateway:
        seen: dict[int, str] = {}
        names: set[str] = set()
        for listener in self.listeners:
            if listener.port in seen:
                raise ValueError(
                    f"listeners {seen[listener.port]!r} and {listener.name!r} both use port {listener.port}"
                )
            if listener.name in names:
                raise ValueError(f"two listeners are named {listener.name!r}")
            seen[listener.port] = listener.name
            names.add(listener.name)
        return self


class Pin(Spec):
    """Requests with this header value go to one backend, whatever the weights."""

    header: str = Field(min_length=1)
    value: str = Field(min_length=1)
    backend: str

    @field_validator("header")
    @classmethod
    def _h(cls, v: str) -> str:
        if not HEADER_NAME.match(v):
            raise ValueError(f"{v!r} is not a valid HTTP header name (letters, digits and !#$%&'*+.^_`|~-)")
        return v.lower()

    @field_validator("value")
    @classmethod
    def _v(cls, v: str) -> str:
        if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in v) or v != v.strip():
            raise ValueError("a header value cannot hold control characters or leading/trailing spaces")
        return v


class RouteMatch(Spec):
    listener: str | None = None
    """Gateway listener (sectionName); all listeners when omitted."""
    client_headers: list[Literal["objective", "fairness-id"]] = []
    """Routing headers clients of this route may send (both spellings: `x-llm-d-inference-objective`
    / `x-gateway-inference-objective`, `x-llm-d-inference-fairness-id` / `x-gateway-inference-fairness-id`);
    every other `x-gateway-*`, `x-llm-d-*`, `x-infershift-*`, `x-envoy-*` header is removed at the
    gateway. None by default: a client never chooses the target model or the endpoint."""
    hostnames: list[str] = []
    paths: list[str] = ["/"]
    """PathPrefix matches."""

    @field_validator("paths")
    @classmethod
    def _p(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("give at least one path")
        for p in v:
            if "?" in p or "#" in p:
                raise ValueError(f"path {p!r} holds a query or fragment; a PathPrefix match is the path only")
            if problem := contract.http_path_problem(p):
                # the HTTPRoute CRD's own rules: the API server would refuse the route at `pulumi up`
                raise ValueError(f"path {p!r} {problem} (Gateway API's HTTPPathMatch rules)")
        if len(set(v)) != len(v):
            raise ValueError(f"path listed twice in {v}")
        return v

    @field_validator("hostnames")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        return [check_hostname(h, "hostname") for h in v]


class MirrorTarget(Spec):
    kind: Literal["Service", "InferencePool"] = "Service"
    name: str
    port: int | None = Field(None, ge=1, le=65535)
    """Service port; defaults to the inference service's port."""
    record: bool = False
    """A Service: send the copies through a recorder (components/shadow_recorder.py) that logs
    each answer for `python -m infershift.shadow report` (a pool's picker records its own with
    `picker.answerLog`)."""


class RouteMirror(MirrorTarget):
    """A route's own RequestMirror filter; `percent: 0` keeps it declared but copies nothing (no
    filter is rendered), which is how a rollout turns its shadow phase off again."""

    percent: int = Field(100, ge=0, le=100)


class Route(RouteMatch):
    """A canary HTTPRoute: weighted InferencePool backends (base-model or node canary)."""

    backends: dict[str, IntWeight] = Field(min_length=1)
    """InferencePool name -> weight; each weight is one `pulumi config set --path` scalar."""
    pins: list[Pin] = []
    mirror: RouteMirror | None = None
    """Copy a share of the route's weighted requests (not pinned ones) to a shadow: a Service, or an
    InferencePool that gets no weight on this route (a rollout's `shadowFirst` sets it)."""

    @field_validator("backends")
    @classmethod
    def _weights(cls, v: dict[str, int]) -> dict[str, int]:
        for pool, weight in v.items():
            if weight < 0:
                raise ValueError(f"weight of {pool!r} is negative ({weight})")
            if weight > 1_000_000:
                raise ValueError(f"weight of {pool!r} is over 1000000")
        if not any(v.values()):
            raise ValueError("all backend weights are zero: the route would send nothing anywhere")
        return v


class Mirror(RouteMatch):
    """An HTTPRoute to a primary InferencePool that copies traffic to a shadow."""

    backend: str
    """The primary InferencePool; clients see only its answers."""
    mirror_to: MirrorTarget
    percent: int = Field(100, ge=1, le=100)


# --- the whole stack ------------------------------------------------------------------


class Images(Spec):
    """The picker's and the simulator's images, built by `pulumi up` from this package's
    Dockerfiles and pushed here; Deployments then run them by digest."""

    registry: str = Field(pattern=r"^[a-z0-9][-a-z0-9.:]*[a-z0-9](/[a-z0-9][-a-z0-9._/]*)?$")
    """Repository prefix: `registry.cn-hangzhou.aliyuncs.com/team` (ACR),
    `us-docker.pkg.dev/project/repo` (Artifact Registry), `localhost:5001` (kind's local registry)."""
    tag: str = Field(contract.PACKAGE_VERSION, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
    platforms: list[str] = Field(["linux/amd64"], min_length=1)
    credential: str | None = None
    """A `registryCredentials` entry to push with; omitted: the build machine's `docker login`."""


class StackSpec(Spec):
    platform: Platform
    images: Images | None = None
    """Build and push the picker and simulator images (none: every pool's `picker.image` and each
    simulated service's `simImage` must name one)."""
    secrets: dict[str, dict[str, str]] = {}
    """Kubernetes Secrets this stack declares: name -> key -> value. Set the values with
    `pulumi config set --secret --path 'secrets.<name>.<key>' VALUE`: they stay encrypted in the
    stack file and the state, and reach manifests only as `secretKeyRef`s."""
    registry_credentials: dict[str, RegistryCredential] = {}
    """`kubernetes.io/dockerconfigjson` Secrets (name -> server, username, password); set the
    password with `--secret` and name the Secret in `imagePullSecrets`."""
    node_pools: dict[str, NodePool] = {}
    services: dict[str, InferenceService] = Field(min_length=1)
    pools: dict[str, Pool] = Field(min_length=1)
    gateway: Gateway
    routes: dict[str, Route] = {}
    mirrors: dict[str, Mirror] = {}
    rollouts: dict[str, Rollout] = {}
    """Progressive rollouts the controller (`python -m infershift.rollout`) drives (spec/rollouts.py)."""

    @field_validator("secrets", "registry_credentials")
    @classmethod
    def _sec(cls, v: dict) -> dict:
        import re

        for name, keys in v.items():
            check_name(name, "secret name")
            for key in keys if isinstance(keys, dict) else ():
                if not re.match(r"^[-._a-zA-Z0-9]+$", key):
                    raise ValueError(f"secret {name!r}: key {key!r} is not a valid Secret data key")
        return v

    @field_validator("node_pools")
    @classmethod
    def _np(cls, v: dict) -> dict:
        return _names(v, "node pool name")

    @field_validator("services")
    @classmethod
    def _sv(cls, v: dict) -> dict:
        return _names(v, "service name")

    @field_validator("pools")
    @classmethod
    def _pl(cls, v: dict) -> dict:
        return _names(v, "pool name")

    @field_validator("routes", "mirrors")
    @classmethod
    def _rt(cls, v: dict) -> dict:
        return _names(v, "route name")

    @field_validator("rollouts")
    @classmethod
    def _ro(cls, v: dict) -> dict:
        return _names(v, "rollout name")

    def pool_services(self, pool: str) -> dict[str, InferenceService]:
        """The services whose pods the pool's selector matches."""
        selector = self.pools[pool].selector.items()
        return {
            name: svc
            for name, svc in self.services.items()
            if selector <= svc.pod_labels(name).items()
        }

    def pool_serves(self, pool: str) -> set[str]:
        served: set[str] = set()
        for svc in self.pool_services(pool).values():
            served |= svc.serves
        return served

    @property
    def platform_plugin(self) -> PlatformPlugin:
        """The registered plug-in of `platform.kind`."""
        return REGISTRY[self.platform.kind]

    def class_name(self) -> str:
        if self.gateway.class_name:
            return self.gateway.class_name
        return self.platform_plugin.gateway_class

    def creates_class(self) -> bool:
        if self.gateway.create_class is not None:
            return self.gateway.create_class
        return self.platform_plugin.creates_gateway_class

    def uses_envoy_gateway(self) -> bool:
        return self.platform_plugin.envoy_gateway
