"""The components' manifests as plain data: the rules that matter beyond schema validity."""
from __future__ import annotations

import yaml

from infershift import spec
from infershift.components import endpoint_picker, inference_pool, inference_service, model_routing, routes
from infershift.components.naming import dns_label


def test_dns_label_keeps_names_unique_and_valid():
    names = [dns_label("pool", m) for m in ("meta-llama/Llama-3.1-8B", "meta-llama/llama-3-1-8b", "a" * 80, "mymodel")]
    assert len(set(names)) == len(names)
    assert names[-1] == "pool-mymodel"  # a clean name stays readable
    assert all(spec.base.DNS_LABEL.match(n) for n in names)


def test_zero_weight_targets_are_left_out_not_rejected():
    objs = model_routing.manifests("p", "v1alpha2", "ns", {"m": {"targets": {"a": 0, "b": 5}}})
    assert objs[0]["spec"]["targetModels"] == [{"name": "b", "weight": 5}]
    objs = model_routing.manifests("p", "v1", "ns", {"m": {"targets": {"a": 0, "b": 5}, "criticality": "Sheddable"}})
    kinds = {o["kind"]: o for o in objs}
    assert kinds["InferenceModelRewrite"]["spec"]["rules"][0]["targets"] == [{"modelRewrite": "b", "weight": 5}]
    assert kinds["InferenceObjective"]["spec"]["priority"] == -1


def test_model_without_targets_has_no_rewrite():
    objs = model_routing.manifests("p", "v1", "ns", {"food-review": {"priority": 10}})
    assert [o["kind"] for o in objs] == ["InferenceObjective"]
    (im,) = model_routing.manifests("p", "v1alpha2", "ns", {"food-review": {"priority": 10}})
    assert im["spec"]["criticality"] == "Critical" and "targetModels" not in im["spec"]


def test_v1_pool_has_several_ports_and_picker_ref():
    m = inference_pool.pool_manifest("p", {"selector": {"app": "x"}, "target_ports": [8000, 8001],
                                           "failure_mode": "FailOpen"})
    assert m["apiVersion"] == "inference.networking.k8s.io/v1"
    assert m["spec"]["targetPorts"] == [{"number": 8000}, {"number": 8001}]
    assert m["spec"]["endpointPickerRef"]["failureMode"] == "FailOpen"


def _picker(version="v1", peers=None):
    objs = endpoint_picker.manifests({"pool_name": "p", "pool_api_version": version, "namespace": "ns",
                                      "config": {"pool": {"name": "p"}}, "gateway_peers": peers or []})
    return {o["kind"]: o for o in objs}


def test_picker_rbac_is_namespaced_and_read_only():
    objs = _picker("v1alpha2")
    assert "ClusterRole" not in objs and "ClusterRoleBinding" not in objs
    rules = objs["Role"]["rules"]
    assert all(set(r["verbs"]) <= {"get", "list", "watch"} for r in rules)
    pool_rule = next(r for r in rules if "inferencepools" in r["resources"])
    assert pool_rule["apiGroups"] == ["inference.networking.x-k8s.io"]
    assert pool_rule["resourceNames"] == ["p"]  # its own pool only
    # Exactly what the picker lists and watches (picker/k8s.py watched_urls), nothing else.
    granted = {(g, res) for r in rules for g in r["apiGroups"] for res in r["resources"]}
    assert granted == {("", "pods"), ("inference.networking.x-k8s.io", "inferencepools"),
                       ("inference.networking.x-k8s.io", "inferencemodels")}
    v1 = {(g, res) for r in _picker("v1")["Role"]["rules"] for g in r["apiGroups"] for res in r["resources"]}
    assert v1 == {("", "pods"), ("inference.networking.k8s.io", "inferencepools"),
                  ("llm-d.ai", "inferenceobjectives"), ("llm-d.ai", "inferencemodelrewrites")}
    assert objs["RoleBinding"]["subjects"] == [{"kind": "ServiceAccount", "name": "p-epp", "namespace": "ns"}]
    assert objs["Deployment"]["spec"]["template"]["spec"]["serviceAccountName"] == "p-epp"


def test_picker_runs_locked_down_with_its_config_mounted():
    objs = _picker()
    pod = objs["Deployment"]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True and c["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["resources"]["requests"] == {"cpu": "500m", "memory": "512Mi"}
    assert [p["containerPort"] for p in c["ports"]] == [9002, 9003, 9090]
    assert c["command"] + c["args"] == ["python", "-m", "infershift.picker", "--config", "/etc/picker/config.yaml",
                                        "--pool-name", "p", "--pool-namespace", "ns", "--host", "0.0.0.0"]
    assert yaml.safe_load(objs["ConfigMap"]["data"]["config.yaml"]) == {"pool": {"name": "p"}}


def test_network_policy_admits_only_the_gateway_to_grpc():
    peers = [{"podSelector": {"matchLabels": {"gw": "x"}}}]
    ingress = _picker(peers=peers)["NetworkPolicy"]["spec"]["ingress"]
    grpc = [rule for rule in ingress if {"port": 9002, "protocol": "TCP"} in rule["ports"]]
    assert grpc == [{"from": peers, "ports": [{"port": 9002, "protocol": "TCP"}]}]
    # No peers given: nothing may call the picker.
    ingress = _picker()["NetworkPolicy"]["spec"]["ingress"]
    assert not any(p["port"] == 9002 for rule in ingress for p in rule["ports"])


def test_picker_configmap_carries_the_specs_picker_config(renders):
    s = spec.load_stack("local")
    cm = renders("local").one("ConfigMap", "mymodel-pool-v1-epp")
    assert yaml.safe_load(cm["data"]["config.yaml"]) == spec.picker_config(s, "mymodel-pool-v1")


def test_vllm_args_cover_every_flag():
    args = inference_service.vllm_args({
        "model": "m", "served_model_name": "s", "port": 9000, "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.8, "max_model_len": 4096, "max_num_seqs": 64, "enforce_eager": True,
        "trust_remote_code": True, "lora_modules": {"a": "/a"}, "max_loras": 1, "max_cpu_loras": 2,
        "max_lora_rank": 16, "chat_template": "x", "extra_args": ["--seed", "1"]})
    assert args == ["--model", "m", "--served-model-name", "s", "--port", "9000", "--tensor-parallel-size", "2",
                    "--gpu-memory-utilization", "0.8", "--max-model-len", "4096", "--max-num-seqs", "64",
                    "--enforce-eager", "--trust-remote-code", "--enable-lora", "--max-loras", "1",
                    "--max-cpu-loras", "2", "--max-lora-rank", "16", "--lora-modules", "a=/a",
                    "--chat-template", "/etc/vllm/chat-template.jinja", "--seed", "1"]


def test_simulated_service_drops_gpu_and_volumes():
    objs = {o["kind"]: o for o in inference_service.manifests("s", {
        "model": "m", "simulated": True, "gpus": 4, "node_selector": {"a": "b"}, "model_pvc": "pvc",
        "chat_template": "t", "shm_size": "1Gi", "lora_modules": {"x": "/x"}, "max_loras": 3})}
    assert "ConfigMap" not in objs
    pod = objs["Deployment"]["spec"]["template"]["spec"]
    assert "volumes" not in pod and "nodeSelector" not in pod and "tolerations" not in pod
    assert pod["containers"][0]["args"] == ["--model", "m", "--max-loras", "3", "--lora-modules", "x=/x",
                                            "--profile", "a10-7b", "--port", "8000", "--host", "0.0.0.0"]


def test_pins_come_before_the_weighted_rule():
    m = routes.canary_manifest("r", {"gateway": "g", "backends": {"a": 100, "b": 0}, "paths": ["/v1"],
                                     "pins": [{"header": "x-canary", "value": "1", "backend": "b"}]})
    pin, weighted = m["spec"]["rules"]
    assert pin["matches"] == [{"path": {"type": "PathPrefix", "value": "/v1"},
                               "headers": [{"type": "Exact", "name": "x-canary", "value": "1"}]}]
    assert [b["weight"] for b in weighted["backendRefs"]] == [100, 0]
    assert "sectionName" not in m["spec"]["parentRefs"][0]


def test_gke_pickers_admit_the_proxy_subnet_only(renders):
    import copy

    from infershift.components.render import render_values

    document = yaml.safe_load(spec.stack_path("gke-node-rollout").read_text())
    values = spec.config_values(document)
    assert [w.path for w in spec.warnings(spec.validate(values))] == ["gateway.proxySubnets"]
    open_policy = renders("gke-node-rollout").one("NetworkPolicy", "llm-epp")["spec"]["ingress"][0]
    assert open_policy["from"] == [{"ipBlock": {"cidr": "0.0.0.0/0"}}]

    values = copy.deepcopy(values)
    values["gateway"]["proxySubnets"] = ["10.129.0.0/23"]
    assert spec.warnings(spec.validate(values)) == []
    ingress = render_values(values, "gke-node-rollout").one("NetworkPolicy", "llm-epp")["spec"]["ingress"]
    assert ingress[0] == {"from": [{"ipBlock": {"cidr": "10.129.0.0/23"}}], "ports": [{"port": 9002, "protocol": "TCP"}]}
