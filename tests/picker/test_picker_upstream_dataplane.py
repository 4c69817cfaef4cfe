"""Through a real Envoy: an upstream EndpointPickerConfig (the Helm chart's default, unchanged),
the x-llm-d-* request headers, and the endpoint-picker protocol's MUSTs on the subset hint and the
served-endpoint report."""
from __future__ import annotations

import copy
import time
from pathlib import Path

import yaml
from envoy_gateway import gateway_config
from pickertest import base_config, complete

from bench.pickerbench.procs import free_port, start_envoy, wait_until

UPSTREAM = Path(__file__).resolve().parent / "testdata" / "upstream"
SERVED_KEY = "x-gateway-destination-endpoint-served"


def served_port(r) -> int:
    return int(r.headers["x-served-port"])


def chart_default() -> dict:
    """The llm-d router Helm chart's default-plugins.yaml, as `helm template` renders it."""
    cm = yaml.safe_load((UPSTREAM / "llm-d-router.chart-gateway.render.configmap.yaml").read_text())
    return yaml.safe_load(cm["data"]["default-plugins.yaml"])


def reload(stack, cfg: dict) -> None:
    n = stack.picker.output().count("config reloaded")
    stack.write_config(cfg)
    wait_until(lambda: stack.picker.output().count("config reloaded") > n, 20, "config reloaded")
    time.sleep(0.05)


def envoy(stack, mutate, **kw) -> int:
    """One more Envoy in front of the stack's picker, its gateway config changed by `mutate`."""
    lp, ap = free_port(), free_port()
    cfg = gateway_config(listen_port=lp, admin_port=ap, picker_port=stack.grpc_port,
                         pool=kw.pop("pool", [stack.servers.addr(k) for k in stack.servers.ports]), **kw)
    mutate(cfg)
    stack.envoys.append(start_envoy(cfg, stack.workdir, ap))
    return lp


def http_filters(cfg: dict) -> list:
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm["http_filters"]


def set_subset_metadata(value):
    """A gateway that sets the subset hint as list-typed metadata, the way the protocol shows it."""
    def mutate(cfg):
        http_filters(cfg).insert(1, {"name": "envoy.filters.http.set_metadata", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.set_metadata.v3.Config",
            "metadata": [{"metadata_namespace": "envoy.lb.subset_hint",
                          "value": {"x-gateway-destination-endpoint-subset": value}}]}})
    return mutate


def test_helm_chart_default_config_routes_and_sheds_by_saturation(stack, reset_servers):
    """Upstream's chart default, unchanged, as the picker's scheduling: load-aware routing, and its
    utilization-detector (injected, as upstream does) drops sheddable requests only while the
    candidates are saturated."""
    s = reset_servers
    subset = {"x-test-subset": ",".join(s.addr(k) for k in ("a1", "a2", "b"))}
    try:
        reload(stack, base_config(s, scheduling=chart_default()))
        for model in ("llama", "batch"):  # batch is Sheddable
            r = complete(stack.port, model, "hello", subset)
            assert r.status == 200, r.body
        s.admin("a1", waiting=2)
        s.admin("a2", waiting=2)
        stack.wait_scraped(s, a1=(2, 0.0, 0), a2=(2, 0.0, 0))
        assert {served_port(complete(stack.port, "llama", f"q{i}", subset)) for i in range(10)} == {s.ports["b"]}
        for k in ("a1", "a2", "b"):
            s.admin(k, waiting=10)  # past the detector's queueDepthThreshold (5): saturation 2
        stack.wait_scraped(s, **{k: (10, 0.0, 0) for k in ("a1", "a2", "b")})
        r = complete(stack.port, "batch", "shed me", subset)
        assert r.status == 429 and r.json()["error"]["code"] == "pool_saturated", r.body
        r = complete(stack.port, "llama", "keep me", subset)  # Standard: never shed
        assert r.status == 200, r.body
    finally:
        reload(stack, base_config(s))


def test_llm_d_rewrite_header_with_the_x_gateway_alias(stack, reset_servers):
    def models_seen() -> list[str]:
        return [x["model"] for k in ("a1", "a2", "b") for x in reset_servers.seen(k)]

    # the servers are shared by the session and keep what they saw: count this test's requests only
    before = models_seen()
    r = complete(stack.port, "llama", "new name", {"x-llm-d-model-name-rewrite": "sql-v2"})
    assert r.status == 200 and r.headers["x-infershift-target-model"] == "sql-v2", r.body
    r = complete(stack.port, "llama", "old name", {"x-gateway-model-name-rewrite": "sql-v1"})
    assert r.status == 200 and r.headers["x-infershift-target-model"] == "sql-v1", r.body
    both = {"x-llm-d-model-name-rewrite": "sql-v2", "x-gateway-model-name-rewrite": "sql-v1"}
    r = complete(stack.port, "llama", "both", both)
    assert r.headers["x-infershift-target-model"] == "sql-v2"  # the current name wins
    seen = models_seen()
    assert seen.count("sql-v2") - before.count("sql-v2") == 2 and seen.count("sql-v1") - before.count("sql-v1") == 1


def test_empty_subset_list_is_503_not_no_hint(stack, reset_servers):
    s = reset_servers
    port = envoy(stack, set_subset_metadata([s.addr("b")]))
    for i in range(5):
        r = complete(port, "llama", f"listed {i}")
        assert r.status == 200 and served_port(r) == s.ports["b"], r.body
    port = envoy(stack, set_subset_metadata([]))
    r = complete(port, "llama", "empty list")
    assert r.status == 503 and r.json()["error"]["code"] == "no_ready_endpoint", r.body
    assert "subset is empty" in r.json()["error"]["message"]


def _report_served(cfg):
    """Envoy's override_host policy writes the host it chose to envoy.lb (selected_host_key), the
    protocol's served-endpoint report; the picker's `upstream.address` attribute is taken away, so
    only the report can tell the picker who served."""
    policy = cfg["static_resources"]["clusters"][0]["load_balancing_policy"]["policies"][0]
    policy["typed_extension_config"]["typed_config"]["selected_host_key"] = {
        "key": "envoy.lb", "path": [{"key": SERVED_KEY}]}
    _no_attributes(cfg)


def _no_attributes(node):
    if isinstance(node, dict):
        node.pop("response_attributes", None)
        for v in node.values():
            _no_attributes(v)
    elif isinstance(node, list):
        for v in node:
            _no_attributes(v)


def test_served_endpoint_report_is_honoured(stack, reset_servers):
    s = reset_servers
    b, served = s.addr("b"), "infershift_picker_served_total"
    pool = [s.addr(k) for k in s.ports]
    # without the report (and without the attribute) the picker learns nothing about who served
    quiet = envoy(stack, lambda cfg: _no_attributes(cfg), override_host=True, pool=pool)
    before = stack.metric(served)
    for i in range(3):
        assert complete(quiet, "llama", f"quiet {i}", {"x-test-subset": b}).status == 200
    time.sleep(0.5)
    assert stack.metric(served) == before
    # with it: every response counted for the endpoint Envoy reports
    port = envoy(stack, _report_served, override_host=True, pool=pool)
    before = stack.metric(served, endpoint=b, picked="true")
    for i in range(4):
        r = complete(port, "llama", f"reported {i}", {"x-test-subset": b})
        assert r.status == 200 and served_port(r) == s.ports["b"]
    wait_until(lambda: stack.metric(served, endpoint=b, picked="true") - before >= 4, 20, "served reports")
    # the gateway serves from another endpoint than the pick (b is not in its cluster): the report says so
    others = [s.addr("a1"), s.addr("a2")]
    port = envoy(stack, _report_served, override_host=True, pool=others)
    before = sum(stack.metric(served, endpoint=a, picked="false") for a in others)
    for i in range(4):
        r = complete(port, "llama", f"fell back {i}", {"x-test-subset": b})
        assert r.status == 200 and served_port(r) in (s.ports["a1"], s.ports["a2"])
    wait_until(lambda: sum(stack.metric(served, endpoint=a, picked="false") for a in others) - before >= 4, 20,
               "fallback reports")
    assert "served by another endpoint than picked" in stack.picker.output()


def test_whole_endpoint_picker_config_file_is_a_picker_config(tmp_path):
    """An upstream EPP's --config-file, unchanged, is a picker config (cluster discovery)."""
    from infershift.picker.config import load_config

    cfg = load_config(str(UPSTREAM / "llm-d-router.deploy.config.epp-config.yaml"))
    assert cfg.kubernetes == {"poolApiVersion": "inference.networking.k8s.io/v1"} and cfg.endpoints is None
    assert copy.deepcopy(cfg.scheduling.profile.filters) == ("model-filter", "decode-filter")
