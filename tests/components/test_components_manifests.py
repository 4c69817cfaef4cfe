"""The components' manifests as plain data: the rules that matter beyond schema validity."""
from __future__ import annotations

import pytest
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
                                      "config": {"pool": {"name": "p"}}, "gateway_peers": peers or [],
                                      "image": "reg.example/picker:1"})
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
                                        "--pool-name", "p", "--pool-namespace", "ns", "--host", "0.0.0.0",
                                        "--shutdown-delay", "5s", "--drain-timeout", "20s"]
    assert yaml.safe_load(objs["ConfigMap"]["data"]["config.yaml"]) == {"pool": {"name": "p"}}


def _picker_with(**args):
    objs = endpoint_picker.manifests({"pool_name": "p", "pool_api_version": "v1", "namespace": "ns",
                                      "image": "reg.example/picker:1", **args})
    dep = next(o for o in objs if o["kind"] == "Deployment")
    return dep, dep["spec"]["template"]["spec"], dep["spec"]["template"]["spec"]["containers"][0]


def test_picker_serves_tls_by_default_self_signed():
    _, pod, c = _picker_with()
    # no TLS flag: the picker's default is TLS with a certificate it makes at start (as upstream's)
    assert not any(a.startswith(("--secure-serving", "--cert-path")) for a in c["args"])
    assert [v["name"] for v in pod["volumes"]] == ["config", "tmp"]


def test_picker_certificate_from_a_secret_is_mounted_and_reloaded():
    _, pod, c = _picker_with(cert_secret="picker-cert")
    assert c["args"][c["args"].index("--cert-path") + 1] == "/etc/picker-tls" and "--enable-cert-reload" in c["args"]
    assert {"name": "tls", "secret": {"secretName": "picker-cert"}} in pod["volumes"]
    assert {"name": "tls", "mountPath": "/etc/picker-tls", "readOnly": True} in c["volumeMounts"]


def test_picker_plaintext_only_when_asked():
    _, pod, c = _picker_with(secure_serving=False)
    assert "--secure-serving=false" in c["args"] and "--cert-path" not in c["args"]
    with pytest.raises(ValueError, match="needs secure serving"):
        _picker_with(secure_serving=False, cert_secret="x")


def test_picker_probes_name_their_health_services_and_the_drain_fits_the_grace_period():
    dep, pod, c = _picker_with()
    assert c["readinessProbe"]["grpc"] == {"port": 9003, "service": "readiness"}
    assert c["livenessProbe"]["grpc"] == {"port": 9003, "service": "liveness"}
    delay = int(c["args"][c["args"].index("--shutdown-delay") + 1].rstrip("s"))
    drain = int(c["args"][c["args"].index("--drain-timeout") + 1].rstrip("s"))
    assert delay + drain < pod["terminationGracePeriodSeconds"]
    # ready only once a model server is: `pulumi up` waits for it as for the model servers
    assert dep["metadata"]["annotations"] == {"pulumi.com/timeoutSeconds": "2700"}
    dep, _, _ = _picker_with(await_timeout_seconds=None)
    assert dep["metadata"]["annotations"] == {"pulumi.com/skipAwait": "true"}


def test_the_picker_accepts_the_deployments_command_line(tmp_path):
    """The Deployment's args, parsed by the picker's own command line (in its virtualenv)."""
    import json
    import os
    import subprocess

    from infershift.devstack.stack import PACKAGE_ROOT, PICKER_PYTHON, SOURCE_CHECKOUT

    if not PICKER_PYTHON.exists():
        pytest.skip("no picker virtualenv")
    code = ("import json, sys; from infershift.picker.__main__ import parse_args; o = parse_args(sys.argv[1:]); "
            "print(json.dumps([o.secure_serving, o.cert_path, o.enable_cert_reload, o.shutdown_delay, o.drain_timeout]))")
    env = {**os.environ, **({"PYTHONPATH": str(PACKAGE_ROOT)} if SOURCE_CHECKOUT else {})}
    for args, want in (({}, [True, None, False]), ({"cert_secret": "picker-cert"}, [True, "/etc/picker-tls", True]),
                       ({"secure_serving": False}, [False, None, False])):
        _, _, c = _picker_with(**args)
        out = subprocess.run([str(PICKER_PYTHON), "-c", code, *c["args"]], capture_output=True, text=True,
                             timeout=60, env=env, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == [*want, 5.0, 20.0], args


def test_stack_picker_tls_reaches_the_deployment(renders):
    import copy

    s = spec.load_stack("local")
    raw = copy.deepcopy(s.model_dump(by_alias=True, exclude_none=True))
    pool = next(iter(raw["pools"]))
    raw["pools"][pool]["picker"]["tls"] = {"secretName": "picker-cert"}
    from infershift.components import program

    args = program.pool_args(spec.model.StackSpec.model_validate(raw), pool)
    assert (args["picker_secure_serving"], args["picker_cert_secret"]) == (True, "picker-cert")
    assert program.pool_args(s, pool)["picker_secure_serving"] is True


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
        "model": "m", "simulated": True, "sim_image": "reg.example/sim:1", "gpus": 4, "node_selector": {"a": "b"},
        "model_pvc": "pvc",
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


def test_images_are_required_where_no_default_exists():
    with pytest.raises(ValueError, match="EndpointPicker for pool 'p': `image` is required"):
        endpoint_picker.manifests({"pool_name": "p", "pool_api_version": "v1"})
    with pytest.raises(ValueError, match="InferenceService 's': `simulated` needs `sim_image`"):
        inference_service.manifests("s", {"model": "m", "simulated": True})


def test_picker_replicas_elect_a_leader():
    """More than one picker replica: leader election on (flag, POD_NAME, the Lease rules) and the
    Deployment settings of a set of which only the leader is ever ready; one replica: none of it."""
    def render(**args):
        objs = endpoint_picker.manifests({"pool_name": "p", "pool_api_version": "v1", "namespace": "ns",
                                          "image": "reg.example/picker:1", **args})
        return {o["kind"]: o for o in objs}

    lease_rules = [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                    "resourceNames": ["epp-ns-p.llm-d.ai"], "verbs": ["get", "update"]},
                   {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]}]
    single, auto = render(), render(replicas=3)
    for objs, on in ((single, False), (auto, True), (render(replicas=3, leader_election=False), False),
                     (render(leader_election=True), True)):
        c = objs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
        assert ("--leader-elect" in c["args"]) is on
        assert ([r for r in objs["Role"]["rules"] if r["apiGroups"] == ["coordination.k8s.io"]] == lease_rules) is on
        assert (c.get("env") == [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]) is on
        assert ("PodDisruptionBudget" not in objs) is on
        assert ("strategy" in objs["Deployment"]["spec"]) is on
    assert single == render(replicas=1)
    assert auto["Deployment"]["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": "100%"}}
    assert auto["Deployment"]["metadata"]["annotations"] == {
        "pulumi.com/waitFor": "jsonpath={.status.readyReplicas}=1", "pulumi.com/timeoutSeconds": "2700"}
    assert single["Deployment"]["metadata"]["annotations"] == {"pulumi.com/timeoutSeconds": "2700"}
