"""Kubernetes objects (real shapes, both pool API versions) translated to the picker's state."""
from __future__ import annotations

import random

from infershift.picker.config import parse_config
from infershift.picker.k8s import (apply_watch_event, endpoints_from_pods, merge_routing, pool_selector_and_ports,
                        routes_from_inference_models, routes_from_rewrites)
from infershift.picker.pool import Pool

POOL_V1 = {"apiVersion": "inference.networking.k8s.io/v1", "kind": "InferencePool",
           "metadata": {"name": "qwen-pool", "namespace": "default"},
           "spec": {"selector": {"matchLabels": {"app": "qwen"}}, "targetPorts": [{"number": 8000}, {"number": 8001}],
                    "endpointPickerRef": {"name": "qwen-epp", "port": {"number": 9002}, "failureMode": "FailOpen"}}}
POOL_V1A2 = {"apiVersion": "inference.networking.x-k8s.io/v1alpha2", "kind": "InferencePool",
             "metadata": {"name": "qwen-pool"},
             "spec": {"selector": {"app": "qwen"}, "targetPortNumber": 8000,
                      "extensionRef": {"name": "qwen-epp", "failureMode": "FailClose"}}}


def pod(name, ip, ready=True, labels=None, deleting=False, phase="Running"):
    meta = {"name": name, "namespace": "default", "labels": labels or {"app": "qwen"}}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-22T00:00:00Z"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "status": {"phase": phase, "podIP": ip,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


PODS = [pod("qwen-0", "10.1.0.5"), pod("qwen-1", "10.1.0.6", ready=False), pod("other", "10.1.0.7", labels={"app": "x"}),
        pod("qwen-2", "10.1.0.8", deleting=True), pod("qwen-3", "fd00::3"), pod("qwen-4", "10.1.0.9", phase="Pending")]


def test_both_pool_versions():
    assert pool_selector_and_ports(POOL_V1) == ({"app": "qwen"}, [8000, 8001])
    assert pool_selector_and_ports(POOL_V1A2) == ({"app": "qwen"}, [8000])


def test_ready_matching_pods_one_endpoint_per_port():
    sel, ports = pool_selector_and_ports(POOL_V1)
    eps = endpoints_from_pods(PODS, sel, ports)
    assert [e.address for e in eps] == ["10.1.0.5:8000", "10.1.0.5:8001", "[fd00::3]:8000", "[fd00::3]:8001"]
    assert eps[0].name == "qwen-0:8000"
    sel, ports = pool_selector_and_ports(POOL_V1A2)
    assert [e.name for e in endpoints_from_pods(PODS, sel, ports)] == ["qwen-0", "qwen-3"]


def test_inference_model_v1alpha2():
    objs = [{"apiVersion": "inference.networking.x-k8s.io/v1alpha2", "kind": "InferenceModel",
             "metadata": {"name": "travel"},
             "spec": {"modelName": "travelhelper", "criticality": "Critical", "poolRef": {"name": "qwen-pool"},
                      "targetModels": [{"name": "travel-v1", "weight": 90}, {"name": "travel-v2", "weight": 10}]}},
            {"metadata": {"name": "base"}, "spec": {"modelName": "qwen", "poolRef": {"name": "qwen-pool"}}},
            {"metadata": {"name": "elsewhere"}, "spec": {"modelName": "x", "poolRef": {"name": "other-pool"}}}]
    routes = routes_from_inference_models(objs, "qwen-pool")
    assert set(routes) == {"travelhelper", "qwen"}
    assert [(t.model, t.weight) for t in routes["travelhelper"].targets] == [("travel-v1", 90), ("travel-v2", 10)]
    assert routes["travelhelper"].criticality == "Critical" and routes["qwen"].targets[0].model == "qwen"


def test_llmd_rewrite_and_objective_merge():
    rewrites = [{"apiVersion": "llm-d.ai/v1alpha2", "kind": "InferenceModelRewrite", "metadata": {"name": "canary"},
                 "spec": {"poolRef": {"name": "qwen-pool"}, "rules": [
                     {"matches": [{"model": {"type": "Exact", "value": "travelhelper"}}],
                      "targets": [{"modelRewrite": "travel-v1", "weight": 50}, {"modelRewrite": "travel-v2", "weight": 50}]}]}}]
    objectives = [{"apiVersion": "llm-d.ai/v1alpha2", "kind": "InferenceObjective", "metadata": {"name": "batch"},
                   "spec": {"priority": -1, "poolRef": {"name": "qwen-pool"}}}]
    assert [t.weight for t in routes_from_rewrites(rewrites, "qwen-pool")["travelhelper"].targets] == [50, 50]
    cfg = parse_config({"pool": {"name": "qwen-pool"}, "kubernetes": {},
                        "models": {"local": {"targets": [{"model": "qwen", "weight": 1}]}}})
    merged = merge_routing(cfg, [], rewrites, objectives)
    assert set(merged.models) == {"local", "travelhelper"} and merged.objectives == {"batch": -1}


def test_watch_events_drive_pool_endpoints():
    store = {}
    for ev in [{"type": "ADDED", "object": PODS[0]}, {"type": "ADDED", "object": pod("qwen-9", "10.1.0.10")},
               {"type": "MODIFIED", "object": pod("qwen-9", "10.1.0.10", ready=False)},
               {"type": "DELETED", "object": PODS[0]}, {"type": "ADDED", "object": pod("qwen-7", "10.1.0.11")}]:
        apply_watch_event(store, ev)
    sel, ports = pool_selector_and_ports(POOL_V1A2)
    cfg = parse_config({"pool": {"name": "qwen-pool"}, "kubernetes": {"poolApiVersion": POOL_V1A2["apiVersion"]}})
    pool = Pool(cfg, clock=lambda: 0.0, rng=random.Random(1))
    changed = []
    pool.on_endpoints_changed.append(lambda: changed.append(1))
    pool.set_endpoints(endpoints_from_pods(list(store.values()), sel, ports))
    assert list(pool.endpoints) == ["10.1.0.11:8000"] and changed == [1]
