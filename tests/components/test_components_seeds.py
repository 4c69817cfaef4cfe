"""The seed guides' key facts, asserted on each stack's render (weights, adapters, images, args)."""
from __future__ import annotations


def _container(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def _flag(args: list[str], flag: str):
    return args[args.index(flag) + 1] if flag in args else None


def _lora_modules(args: list[str]) -> list[str]:
    i = args.index("--lora-modules") + 1
    out = []
    while i < len(args) and not args[i].startswith("--"):
        out.append(args[i])
        i += 1
    return out


def test_ack_canary_seed_000_003(renders):
    r = renders("ack-canary")
    route = r.one("HTTPRoute", "inference-route")["spec"]
    assert route["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                    "name": "inference-gateway", "sectionName": "llm-gw"}]
    assert [(b["group"], b["name"], b["weight"]) for b in route["rules"][0]["backendRefs"]] == [
        ("inference.networking.x-k8s.io", "mymodel-pool-v1", 90), ("inference.networking.x-k8s.io", "mymodel-pool-v2", 10)]
    lora = r.one("InferenceModel", "mymodel-pool-v1-travelhelper")["spec"]
    assert lora["modelName"] == "travelhelper" and lora["criticality"] == "Critical"
    assert lora["targetModels"] == [{"name": "travel-helper-v1", "weight": 90}, {"name": "travel-helper-v2", "weight": 10}]
    for pool in ("mymodel-pool-v1", "mymodel-pool-v2"):
        model = r.one("InferenceModel", f"{pool}-mymodel")["spec"]
        assert model["poolRef"] == {"group": "inference.networking.x-k8s.io", "kind": "InferencePool", "name": pool}
    v1 = r.one("InferencePool", "mymodel-pool-v1")["spec"]
    assert v1["selector"] == {"app": "custom-serving", "release": "qwen"} and v1["targetPortNumber"] == 8000
    assert v1["extensionRef"] == {"failureMode": "FailClose", "group": "", "kind": "Service",
                                  "name": "mymodel-pool-v1-epp", "portNumber": 9002}
    qwen = _container(r.one("Deployment", "qwen"))
    assert qwen["image"] == "registry-cn-hangzhou.ack.aliyuncs.com/dev/qwen-2.5-7b-instruct-lora:v0.1"
    args = qwen["args"]
    assert _flag(args, "--model") == "/models/Qwen-2.5-7B-Instruct" and _flag(args, "--served-model-name") == "mymodel"
    assert {"--enable-lora", "--enforce-eager", "--trust-remote-code"} <= set(args)
    assert (_flag(args, "--max-loras"), _flag(args, "--max-cpu-loras"), _flag(args, "--max-model-len"),
            _flag(args, "--gpu-memory-utilization")) == ("2", "4", "8192", "0.95")
    assert _lora_modules(args) == ["travel-helper-v1=/models/Qwen-TravelHelper-Lora",
                                   "travel-helper-v2=/models/Qwen-TravelHelper-Lora-v2"]
    ds = _container(r.one("Deployment", "deepseek-r1"))
    assert ds["image"] == "registry-cn-hangzhou.ack.aliyuncs.com/dev/ds-r1-qwen-7b-without-lora:v0.1"
    assert "--enable-lora" not in ds["args"] and ds["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert r.one("ClientTrafficPolicy", "client-buffer-limit")["spec"]["connection"] == {"bufferLimit": "20Mi"}
    assert r.one("BackendTrafficPolicy", "backend-timeout")["spec"]["timeout"] == {"http": {"requestTimeout": "24h"}}
    assert r.one("GatewayClass", "inference-gateway")["spec"]["controllerName"] == \
        "gateway.envoyproxy.io/gatewayclass-controller"
    listeners = r.one("Gateway", "inference-gateway")["spec"]["listeners"]
    assert [(l["name"], l["port"], l["protocol"]) for l in listeners] == [("llm-gw", 8080, "HTTP")]
    nodepool = next(c for c in r.cloud if c.type == "alicloud:cs/nodePool:NodePool").inputs
    assert nodepool["instanceTypes"] == ["ecs.gn7i-c8g1.2xlarge"]
    assert nodepool["taints"] == [{"effect": "NoSchedule", "key": "nvidia.com/gpu", "value": "present"}]
    # a fixed size of 2 (ACK's node autoscaling is not assumed): desiredSize, no scaling group
    assert nodepool["desiredSize"] == "2" and "scalingConfig" not in nodepool


def test_ack_mirror_seed_002(renders):
    r = renders("ack-mirror")
    rule = r.one("HTTPRoute", "mirror-route")["spec"]
    assert rule["hostnames"] == ["example.com"]
    assert rule["parentRefs"][0]["name"] == "example-gateway"
    (only,) = rule["rules"]
    assert only["backendRefs"] == [{"group": "inference.networking.x-k8s.io", "kind": "InferencePool",
                                    "name": "vllm-llama2-7b-pool", "weight": 1}]
    assert only["filters"] == [{"type": "RequestMirror", "requestMirror": {
        "backendRef": {"group": "", "kind": "Service", "name": "vllm-llama2-7b-pool-1", "port": 8000}, "percent": 100}}]
    shadow = r.one("Service", "vllm-llama2-7b-pool-1")["spec"]
    # the Service selects the shadow Deployment's pods by their stable per-service label
    assert shadow["selector"] == {"infershift.io/service": "vllm-llama2-7b-pool-1"} and shadow["ports"][0]["port"] == 8000
    shadow_pods = r.one("Deployment", "vllm-llama2-7b-pool-1")["spec"]["template"]["metadata"]["labels"]
    assert shadow_pods["app"] == "vllm-llama2-7b-pool-1" and shadow["selector"].items() <= shadow_pods.items()
    (model,) = [m["spec"] for m in r.find("InferenceModel")]
    assert model["modelName"] == "/model/llama2" and model["targetModels"] == [{"name": "/model/llama2", "weight": 100}]
    gw = r.one("Gateway", "example-gateway")["spec"]
    assert gw["gatewayClassName"] == "example-gateway-class"
    assert gw["infrastructure"]["parametersRef"] == {"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy",
                                                     "name": "custom-proxy-config"}
    proxy = r.one("EnvoyProxy", "custom-proxy-config")["spec"]
    assert proxy["provider"]["kubernetes"]["envoyService"]["type"] == "ClusterIP"
    for name in ("vllm-llama2-7b-pool", "vllm-llama2-7b-pool-1"):
        dep = r.one("Deployment", name)
        c = _container(dep)
        assert c["image"] == "registry-cn-hangzhou.ack.aliyuncs.com/ack-demo/llama2-with-lora:v0.2"
        assert (_flag(c["args"], "--max-loras"), _flag(c["args"], "--max-cpu-loras")) == ("4", "12")
        assert len(_lora_modules(c["args"])) == 10
        assert _flag(c["args"], "--chat-template") == "/etc/vllm/chat-template.jinja"
        assert c["env"] == [{"name": "PORT", "value": "8000"}]
        assert {"mountPath": "/etc/vllm", "name": "chat-template", "readOnly": True} in c["volumeMounts"]
        template = r.one("ConfigMap", f"{name}-chat-template")["data"]["chat-template.jinja"]
        assert template.startswith("{% if messages[0]['role'] == 'system' %}") and "[INST]" in template


def test_ack_multi_lora_seed_004_lora(renders):
    r = renders("ack-multi-lora")
    model = r.one("InferenceModel", "vllm-llama2-7b-pool-lora-request")["spec"]
    assert model["modelName"] == "lora-request"
    # in name order, as the Pulumi engine hands structured config over (spec/load.py canonical_order)
    assert model["targetModels"] == [{"name": "sql-lora", "weight": 50}, {"name": "tweet-summary", "weight": 50}]
    dep = r.one("Deployment", "vllm-llama2-7b-pool")
    assert dep["spec"]["replicas"] == 3
    c = _container(dep)
    assert c["image"] == "registry-cn-hangzhou-vpc.ack.aliyuncs.com/dev/llama2-with-lora:v0.2"
    assert _flag(c["args"], "--max-loras") == "10" and len(_lora_modules(c["args"])) == 10
    assert "tweet-summary-4=/adapters/vineetsharma/qlora-adapter-Llama-2-7b-hf-TweetSumm_4" in c["args"]
    assert dep["spec"]["template"]["metadata"]["labels"] == {"app": "vllm-llama2-7b-pool",
                                                             "infershift.io/service": "vllm-llama2-7b-pool"}
    template = r.one("ConfigMap", "vllm-llama2-7b-pool-chat-template")["data"]["chat-template.jinja"]
    assert template.rstrip().endswith("{% endfor %}")
    assert r.one("Gateway", "inference-gateway")["spec"]["listeners"][0]["port"] == 8081


def test_ack_reasoning_seed_004_base_model(renders):
    r = renders("ack-reasoning")
    model = r.one("InferenceModel", "reasoning-pool-qwq")["spec"]
    # in name order, as the Pulumi engine hands structured config over (spec/load.py canonical_order)
    assert model["targetModels"] == [{"name": "deepseek-r1", "weight": 50}, {"name": "qwq-32b", "weight": 50}]
    assert r.one("InferencePool", "reasoning-pool")["spec"]["selector"] == {"app": "custom-serving"}
    qwq = r.one("Deployment", "qwq-32b")
    c = _container(qwq)
    assert qwq["spec"]["replicas"] == 5
    assert c["image"] == "kube-ai-registry.cn-shanghai.cr.aliyuncs.com/kube-ai/vllm:v0.7.2"
    assert _flag(c["args"], "--tensor-parallel-size") == "4" and c["resources"]["limits"] == {"nvidia.com/gpu": "4"}
    pod = qwq["spec"]["template"]["spec"]
    assert {"name": "model", "persistentVolumeClaim": {"claimName": "llm-model", "readOnly": True}} in pod["volumes"]
    assert {"emptyDir": {"medium": "Memory", "sizeLimit": "30Gi"}, "name": "shm"} in pod["volumes"]
    assert pod["nodeSelector"] == {"infershift.io/node-pool": "gpu-4xa10"}
    pools = {c.name: c.inputs for c in r.cloud if c.type == "alicloud:cs/nodePool:NodePool"}
    assert pools["gpu-4xa10-nodepool"]["instanceTypes"] == ["ecs.gn7i-c32g1.32xlarge"]
    ds = r.one("Deployment", "deepseek-r1")["spec"]["template"]["spec"]
    assert ds["volumes"][1]["persistentVolumeClaim"]["claimName"] == "llm-model-ds"
    assert ds["nodeSelector"] == {"infershift.io/node-pool": "gpu-a10"}


def test_gke_node_rollout_seed_001(renders):
    r = renders("gke-node-rollout")
    route = r.one("HTTPRoute", "routes-to-llm")["spec"]
    assert [(b["group"], b["kind"], b["name"], b["weight"]) for b in route["rules"][0]["backendRefs"]] == [
        ("inference.networking.k8s.io", "InferencePool", "llm", 90),
        ("inference.networking.k8s.io", "InferencePool", "llm-new", 10)]
    assert route["parentRefs"][0]["name"] == "my-inference-gateway"
    assert r.one("Gateway", "my-inference-gateway")["spec"]["gatewayClassName"] == "gke-l7-regional-external-managed"
    assert not r.find("GatewayClass") and not r.find("ClientTrafficPolicy")
    pool = r.one("InferencePool", "llm-new")["spec"]
    assert pool["selector"] == {"matchLabels": {"app": "vllm-llama3-8b", "nodes": "h100"}}
    assert pool["targetPorts"] == [{"number": 8000}]
    assert pool["endpointPickerRef"] == {"failureMode": "FailClose", "group": "", "kind": "Service",
                                         "name": "llm-new-epp", "port": {"number": 9002}}
    # The same objectives on both pools: the model config does not change with the nodes.
    objectives = {o["metadata"]["annotations"]["infershift.io/model-name"]: o["spec"]["priority"]
                  for o in r.find("InferenceObjective") if o["spec"]["poolRef"]["name"] == "llm-new"}
    assert objectives == {"meta-llama/Llama-3.1-8B-Instruct": 10, "food-review": 10}
    pools = {c.name: c.inputs for c in r.cloud if c.type == "gcp:container/nodePool:NodePool"}
    h100 = pools["gpu-h100-nodepool"]["nodeConfig"]
    assert h100["machineType"] == "a3-highgpu-1g"
    assert h100["guestAccelerators"] == [{"count": 1, "gpuDriverInstallationConfig": {"gpuDriverVersion": "LATEST"},
                                          "type": "nvidia-h100-80gb"}]
    assert h100["taints"] == [{"effect": "NO_SCHEDULE", "key": "nvidia.com/gpu", "value": "present"}]
    assert pools["gpu-l4-nodepool"]["autoscaling"] == {"totalMaxNodeCount": 4, "totalMinNodeCount": 1,
                                                       "locationPolicy": "ANY"}
    assert pools["gpu-l4-nodepool"]["nodeLocations"] == ["us-central1-a"]


def test_gke_base_model_rollout_seed_001(renders):
    r = renders("gke-base-model-rollout")
    refs = r.one("HTTPRoute", "routes-to-llm")["spec"]["rules"][0]["backendRefs"]
    assert [(b["name"], b["weight"]) for b in refs] == [("llm-pool", 90), ("llm-pool-version-2", 10)]
    old, new = _container(r.one("Deployment", "llama3-8b")), _container(r.one("Deployment", "qwen3-8b"))
    assert _flag(old["args"], "--model") == "meta-llama/Llama-3.1-8B-Instruct"
    assert _flag(new["args"], "--model") == "Qwen/Qwen3-8B"
    assert _flag(old["args"], "--served-model-name") == _flag(new["args"], "--served-model-name") == "llm"
    assert _lora_modules(new["args"]) == ["food-review=/adapters/qwen3/food-review"]
    for pool in ("llm-pool", "llm-pool-version-2"):
        assert r.one("InferenceObjective", f"{pool}-llm")["spec"] == {
            "poolRef": {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": pool}, "priority": 10}


def test_local_stack_runs_simulators_without_gpus(renders):
    r = renders("local")
    for name in ("qwen", "deepseek-r1", "llama2", "llama2-candidate"):
        dep = r.one("Deployment", name)
        pod = dep["spec"]["template"]["spec"]
        c = pod["containers"][0]
        assert c["image"].startswith("localhost:5001/infershift/infershift-sim:0.1.0@sha256:")
        assert c["command"] == ["python", "-m", "infershift.sim"]
        assert "resources" not in c and "nodeSelector" not in pod and "tolerations" not in pod
        assert _flag(c["args"], "--host") == "0.0.0.0" and _flag(c["args"], "--profile") == "a10-7b"
    qwen = _container(r.one("Deployment", "qwen"))["args"]
    assert _flag(qwen, "--served-model-name") == "mymodel" and _flag(qwen, "--max-loras") == "2"
    route = r.one("HTTPRoute", "inference-route")["spec"]
    pin, main = route["rules"]
    assert pin["matches"][0]["headers"] == [{"name": "x-canary", "type": "Exact", "value": "true"}]
    assert pin["backendRefs"] == [{"group": "inference.networking.k8s.io", "kind": "InferencePool",
                                   "name": "mymodel-pool-v2", "weight": 1}]
    assert [m["path"]["value"] for m in main["matches"]] == ["/v1/completions", "/v1/chat/completions"]
    mirror = r.one("HTTPRoute", "llama2-mirror")["spec"]["rules"][0]["filters"][0]["requestMirror"]
    assert mirror["backendRef"] == {"group": "inference.networking.k8s.io", "kind": "InferencePool",
                                    "name": "llama2-candidate-pool"}
    rewrite = r.one("InferenceModelRewrite", "mymodel-pool-v1-travelhelper")["spec"]["rules"][0]
    assert rewrite["matches"] == [{"model": {"type": "Exact", "value": "travelhelper"}}]
    assert rewrite["targets"] == [{"modelRewrite": "travel-helper-v1", "weight": 90},
                                  {"modelRewrite": "travel-helper-v2", "weight": 10}]
