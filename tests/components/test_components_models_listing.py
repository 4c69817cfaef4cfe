"""The /v1/models listing objects (components/models_listing.py) from stack config: what is
rendered where, the image it runs, and when nothing is rendered. (Every stack's listing against
the local stack's, and the server run from the rendered Deployment: tests/devstack.)"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml

from infershift import contract
from infershift.components import models_listing
from infershift.components.program import needed_images
from infershift.components.render import render_values
from infershift.spec import load_file

BASE = Path(__file__).resolve().parents[1] / "spec" / "Pulumi.valid-base.yaml"


def _values(**edits) -> dict:
    doc = yaml.safe_load(BASE.read_text())["config"]
    values = {k.split(":", 1)[1]: v for k, v in copy.deepcopy(doc).items()}
    for key, value in edits.items():
        values[key] = value
    return values


def _listing_objects(values: dict) -> dict:
    r = render_values(values)
    return {(o["kind"], o["metadata"]["name"]): o for o in r.objects
            if contract.LISTING_LABEL in (o["metadata"].get("labels") or {})}


def _listings(objects: dict) -> dict:
    return json.loads(objects[("ConfigMap", "inference-gateway-models")]["data"][contract.LISTING_FILE])


def test_one_listing_per_listener_with_the_client_names_and_their_targets():
    objects = _listing_objects(_values())
    assert set(objects) == {("ConfigMap", "inference-gateway-models"), ("Deployment", "inference-gateway-models"),
                            ("Service", "inference-gateway-models"), ("HTTPRoute", "inference-gateway-models-http")}
    # the pool's client name `sql` and the base model served under its own name; not the adapter alone
    assert _listings(objects) == {"http": {"object": "list", "data": [
        {"id": "/model/llama2", "object": "model", "created": 0, "owned_by": "infershift",
         "targets": [{"model": "/model/llama2", "pool": "llama-pool", "route": "route", "share": 1.0}]},
        {"id": "sql", "object": "model", "created": 0, "owned_by": "infershift",
         "targets": [{"model": "sql-lora", "pool": "llama-pool", "route": "route", "share": 1.0}]}]}}
    image = objects[("Deployment", "inference-gateway-models")]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert "infershift-picker" in image  # the picker image the stack builds


def test_hostnames_and_a_route_that_names_v1_models_itself():
    values = _values(routes={
        "route": {"listener": "http", "hostnames": ["a.example.com"], "backends": {"llama-pool": 100}},
        "wild": {"listener": "http", "hostnames": ["*.example.com"], "backends": {"llama-pool": 100}},
    })
    objects = _listing_objects(values)
    listings = _listings(objects)
    assert sorted(listings) == ["http/*.example.com", "http/a.example.com"]
    # a.example.com is served by its own route and the wildcard route, *.example.com by the wildcard's only
    assert {t["route"] for m in listings["http/a.example.com"]["data"] for t in m["targets"]} == {"route", "wild"}
    assert {t["route"] for m in listings["http/*.example.com"]["data"] for t in m["targets"]} == {"wild"}
    routes = {o["spec"]["hostnames"][0]: o for (kind, _), o in objects.items() if kind == "HTTPRoute"}
    assert set(routes) == {"a.example.com", "*.example.com"}
    assert routes["a.example.com"]["spec"]["rules"][0]["filters"][0]["requestHeaderModifier"]["set"] == [
        {"name": contract.LISTING_HEADER, "value": "http/a.example.com"}]
    # a route naming /v1/models keeps it: nothing rendered for that listener
    values = _values(routes={"route": {"listener": "http", "paths": ["/v1/models", "/v1/completions"],
                                       "backends": {"llama-pool": 100}}})
    assert _listing_objects(values) == {}


def test_turned_off_or_its_own_image():
    assert _listing_objects(_values(gateway={"listeners": [{"name": "http", "port": 8080}],
                                             "modelsListing": {"enabled": False}})) == {}
    values = _values(gateway={"listeners": [{"name": "http", "port": 8080}],
                              "modelsListing": {"image": "registry.example/picker:1", "replicas": 2}})
    deployment = _listing_objects(values)[("Deployment", "inference-gateway-models")]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/picker:1"


def test_the_picker_image_is_built_for_the_listing_alone():
    values = _values(platform={"kind": "ack", "ack": {"clusterId": "c0123456789abcdef0123456789abcdef",
                                                      "region": "cn-hangzhou"}},
                     pools={"llama-pool": {"selector": {"app": "llama"},
                                           "picker": {"mode": "managed", "service": "llama-ext-proc"}}})
    doc = {"config": {f"infershift:{k}": v for k, v in values.items()}}
    path = BASE.parent / ".tmp-listing.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        spec = load_file(path)
    finally:
        path.unlink()
    assert needed_images(spec) == ["picker", "sim"]
    args = models_listing.stack_args(spec, "img", None)
    assert args is not None and args["pool_models"] == {"llama-pool": {"/model/llama2": {"/model/llama2": 1}}}


def test_client_models_as_the_picker_reads_the_routing_objects():
    models = {"a": {"x": 0}, "b": {"y": 3, "z": 0}}
    # v1alpha2: an InferenceModel per name (no live target: served under its own name)
    assert models_listing.client_models("v1alpha2", models, ["base", "y"]) == {"a": {"a": 1}, "b": {"y": 3},
                                                                              "base": {"base": 1}}
    # v1: a rewrite only where a target is live
    assert models_listing.client_models("v1", models, ["base", "a"]) == {"b": {"y": 3}, "base": {"base": 1},
                                                                        "a": {"a": 1}}
