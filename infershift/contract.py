"""The contract the components, the local stack and the picker share: API groups and versions,
header names, annotation keys, criticality <-> priority, default ports.

Standard library only: the picker's image carries this module (and nothing else of the
package but `infershift/picker`), so it must import nothing outside it.
"""
from __future__ import annotations

import re

# --- API groups and versions -------------------------------------------------------------
GATEWAY_GROUP = "gateway.networking.k8s.io"
GATEWAY_API = f"{GATEWAY_GROUP}/v1"
ENVOY_GATEWAY_GROUP = "gateway.envoyproxy.io"
ENVOY_GATEWAY_API = f"{ENVOY_GATEWAY_GROUP}/v1alpha1"
ENVOY_GATEWAY_CONTROLLER = "gateway.envoyproxy.io/gatewayclass-controller"
LLMD_GROUP = "llm-d.ai"
LLMD_API = f"{LLMD_GROUP}/v1alpha2"
GKE_NETWORKING_API = "networking.gke.io/v1"

POOL_GROUP_V1 = "inference.networking.k8s.io"
POOL_GROUP_X = "inference.networking.x-k8s.io"
# InferencePool API version (as a stack names it) -> API group.
POOL_GROUPS = {"v1": POOL_GROUP_V1, "v1alpha2": POOL_GROUP_X}
POOL_V1 = f"{POOL_GROUP_V1}/v1"
POOL_V1ALPHA2 = f"{POOL_GROUP_X}/v1alpha2"
POOL_V1ALPHA1 = f"{POOL_GROUP_X}/v1alpha1"  # ACK's add-on as seed 004 shows it
INFERENCE_MODEL_APIS = (f"{POOL_GROUP_X}/v1alpha2", POOL_V1ALPHA1)

# --- annotations -------------------------------------------------------------------------
# ACK's add-on: an InferencePool attached to a Gateway listener without an HTTPRoute,
# value "gateway-name/listener-name" (seed 004).
ATTACH_TO_ANNOTATION = f"{POOL_GROUP_X}/attach-to"

# The client model name an InferenceObjective / InferenceModelRewrite is for (objective names
# are per namespace, so two pools serving one model need `<pool>-<model>` names).
MODEL_NAME_ANNOTATION = "infershift.io/model-name"

# Every model-server pod carries this label (value: the service's name); Deployments and Services
# select on it alone, so a change of the labels pools select on never touches an immutable
# selector (no delete-and-recreate of the replicas).
SERVICE_LABEL = "infershift.io/service"
# A hash of the chat template on the pod template: a template change rolls the pods (vLLM reads
# the file once, at start).
CHAT_TEMPLATE_HASH_ANNOTATION = "infershift.io/chat-template-hash"

# pulumi-kubernetes' await annotations (provider/pkg/metadata/annotations.go, overrides.go):
# waitFor takes "condition=Type" (status.conditions) or "jsonpath={...}=value", or a JSON array
# of them (all must hold); timeoutSeconds bounds the wait; skipAwait turns it off.
PULUMI_WAIT_FOR = "pulumi.com/waitFor"
PULUMI_TIMEOUT_SECONDS = "pulumi.com/timeoutSeconds"
PULUMI_SKIP_AWAIT = "pulumi.com/skipAwait"
# A server-side-apply patch takes over fields another field manager owns.
PULUMI_PATCH_FORCE = "pulumi.com/patchForce"

# --- headers -----------------------------------------------------------------------------
DESTINATION_HEADER = "x-gateway-destination-endpoint"
DESTINATION_SERVED_HEADER = "x-gateway-destination-endpoint-served"
SUBSET_NAMESPACE = "envoy.lb.subset_hint"
SUBSET_KEY = "x-gateway-destination-endpoint-subset"
REWRITE_HEADER = "x-gateway-model-name-rewrite"
OBJECTIVE_HEADER = "x-gateway-inference-objective"
FAIRNESS_HEADER = "x-gateway-inference-fairness-id"
# Upstream's current names for the request headers above (llm-d router, pkg/epp/metadata/consts.go),
# which keeps the x-gateway-* ones as deprecated aliases. The picker reads the first of each tuple
# that a request carries, current name first.
LLMD_REWRITE_HEADER = "x-llm-d-model-name-rewrite"
LLMD_OBJECTIVE_HEADER = "x-llm-d-inference-objective"
LLMD_FAIRNESS_HEADER = "x-llm-d-inference-fairness-id"
REWRITE_HEADERS = (LLMD_REWRITE_HEADER, REWRITE_HEADER)
OBJECTIVE_HEADERS = (LLMD_OBJECTIVE_HEADER, OBJECTIVE_HEADER)
FAIRNESS_HEADERS = (LLMD_FAIRNESS_HEADER, FAIRNESS_HEADER)
DEFAULT_FAIRNESS_ID = "default-flow"  # upstream's, for a request that names none
# The routing namespaces: request headers that steer the gateway, the picker or Envoy itself. A
# client's copies are removed at the gateway listener, before routing and the picker, except those
# a stack declares client-facing: its pin headers, and the objective / fairness-id headers on
# routes that let clients choose them (CLIENT_HEADERS_ANNOTATION; none by default).
ROUTING_HEADER_PREFIXES = ("x-gateway-", "x-llm-d-", "x-infershift-", "x-envoy-")
CLIENT_CHOOSABLE_HEADERS = OBJECTIVE_HEADERS + FAIRNESS_HEADERS
# On an HTTPRoute: comma-separated routing-namespace headers (of CLIENT_CHOOSABLE_HEADERS) the
# route lets clients send.
CLIENT_HEADERS_ANNOTATION = "infershift.io/client-headers"
TARGET_HEADER = "x-infershift-target-model"
RESTORE_HEADER = "x-infershift-restore"
MIRROR_HEADER = "x-infershift-mirror"
POD_HEADER = "x-inference-pod"  # the model server's own name, as it reports it
# GET /v1/models through the gateway (components/models_listing.py, picker/listing.py): the
# HTTPRoute rule of a listener (and hostname) sets this request header to its key in the rendered
# listings file; a client's copy is overwritten (and removed earlier, with the routing namespace).
LISTING_HEADER = "x-infershift-listing"
LISTING_MODULE = "infershift.picker.listing"
LISTING_FILE = "listings.json"  # the ConfigMap's data key, mounted at LISTING_DIR
LISTING_DIR = "/etc/models"
# The listing objects (ConfigMap, Deployment, Service, HTTPRoutes) carry this label (value: the Gateway).
LISTING_LABEL = "infershift.io/models-listing"
# Model servers' management endpoints no client may reach through the gateway (vLLM's runtime LoRA
# loading, cache resets, sleep mode, profiling, elastic EP scaling; SGLang's server_info; the
# simulator's /admin/): the local gateway answers them 404 itself, a cluster's listing routes send
# them to the listing server, which answers 404 (components/models_listing.py).
MANAGEMENT_PATHS = ("/v1/load_lora_adapter", "/v1/unload_lora_adapter", "/reset_prefix_cache", "/reset_mm_cache",
                    "/sleep", "/wake_up", "/is_sleeping", "/collective_rpc", "/start_profile", "/stop_profile",
                    "/server_info", "/is_scaling_elastic_ep", "/scale_elastic_ep")
MANAGEMENT_PREFIXES = ("/admin",)

# --- criticality <-> priority (InferenceModel v1alpha2 <-> InferenceObjective) -----------
CRITICALITIES = ("Critical", "Standard", "Sheddable")
CRITICALITY_PRIORITY = {"Critical": 1, "Standard": 0, "Sheddable": -1}


def criticality_of(priority: int) -> str:
    return "Critical" if priority > 0 else ("Sheddable" if priority < 0 else "Standard")


# --- picker leader election (picker/leader.py; the Role components/endpoint_picker.py renders) ---
def picker_lease_name(namespace: str, pool: str) -> str:
    """The coordination.k8s.io Lease the pool's picker replicas elect a leader on: upstream's name
    (llm-d-router pkg/epp/server/controller_manager.go, LeaderElectionID), so infershift's and
    upstream's pickers of one pool never lead at the same time."""
    return f"epp-{namespace}-{pool}.llm-d.ai"


# The package's version: the default tag of the images a stack builds.
PACKAGE_VERSION = "0.1.0"

# --- default ports -----------------------------------------------------------------------
PICKER_GRPC_PORT, PICKER_HEALTH_PORT, PICKER_METRICS_PORT = 9002, 9003, 9090
MODEL_SERVER_PORT = 8000
MODELS_LISTING_PORT = 8080
# The shadow recorder a mirror to a Service sends its copies through (components/shadow_recorder.py,
# picker/recorder.py); its Deployment and Service carry RECORDER_LABEL (value: the mirrored Service).
RECORDER_PORT = 8000
RECORDER_MODULE = "infershift.picker.recorder"
RECORDER_LABEL = "infershift.io/shadow-recorder"


# Request-header limits of a gateway listener: more headers or bytes of them get 431 (as error
# JSON). The count is Envoy's default max_headers_count (100; Envoy Gateway has no setting for it);
# the size is set on Envoy Gateway with ClientTrafficPolicy headers.maxRequestHeaderLimit (Envoy's
# max_request_headers_kb, default 60 KiB): 12 KiB stays under what vLLM's HTTP server takes
# (uvicorn/h11: 16 KiB of request head), so no request the gateway accepts is refused further
# in, in plain text. The local stack reads the limit from the rendered policy.
GATEWAY_MAX_HEADERS = 100
GATEWAY_MAX_HEADERS_KB = 12
ENVOY_DEFAULT_MAX_HEADERS_KB = 60


# Gateway API's rules for an Exact or PathPrefix HTTPPathMatch value (the HTTPRoute CRD's CEL
# validations, gateway-api httproutes.yaml, HTTPPathMatch: maxLength 1024, starts with '/', no
# '//', '/./', '/../', '%2f'/'%2F' or '#', not ending in '/..' or '/.', only RFC 3986 path
# characters or percent-escapes). The spec and the components check paths with these before the
# API server would refuse the route.
_PATH_CHARS = re.compile(r"(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|%[0-9a-fA-F]{2})+")


def http_path_problem(value: str) -> str | None:
    """Why the API server would refuse `value` as an HTTPRoute PathPrefix/Exact match, or None."""
    if not value.startswith("/"):
        return "must start with '/'"
    if len(value) > 1024:
        return "is longer than 1024 characters"
    for part in ("//", "/./", "/../", "%2f", "%2F", "#"):
        if part in value:
            return f"must not contain {part!r}"
    for end in ("/..", "/."):
        if value.endswith(end):
            return f"must not end with {end!r}"
    if not _PATH_CHARS.fullmatch(value):
        return "must only contain URL path characters (letters, digits, -._~!$&'()*+,;=:@/ or %XX escapes)"
    return None
