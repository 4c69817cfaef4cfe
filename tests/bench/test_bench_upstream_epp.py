"""The upstream-epp launcher's objects and configs, checked without running EPP: Envoy's config by
`envoy --mode validate`, the InferencePool and Pods against what EPP reads, and that a missing build
leaves the router out with the reason."""
import json

import pytest

from bench.procs import validate_envoy
from bench.routers import upstream_epp as ue

POOL = ["127.0.0.1:18001", "127.0.0.1:18002", "127.0.0.1:18003"]


def test_envoy_config_validates_and_fails_closed_in_full_duplex(tmp_path):
    cfg = ue.envoy_config(listen_port=18010, admin_port=18011, picker_port=18012, pool=POOL)
    text = json.dumps(cfg)
    assert "FULL_DUPLEX_STREAMED" in text
    assert '"failure_mode_allow": true' not in text
    p = tmp_path / "gw.json"
    p.write_text(text)
    validate_envoy(p)


def test_pool_and_pods_name_every_server_port_once():
    pool = ue.inference_pool(POOL, 19000)
    assert [p["number"] for p in pool["spec"]["targetPorts"]] == [18001, 18002, 18003]
    assert pool["spec"]["selector"]["matchLabels"] == dict([ue.POOL_LABEL])
    made = ue.pods(POOL)
    assert [p["metadata"]["annotations"][ue.ACTIVE_PORTS_ANNOTATION] for p, _ in made] == ["18001", "18002", "18003"]
    assert all(s["podIP"] == "127.0.0.1" and s["phase"] == "Running" for _, s in made)


@pytest.mark.parametrize("addresses, field", [
    ([f"127.0.0.1:{18000 + i}" for i in range(9)], "at most 8"),
    (["127.0.0.1:18001", "127.0.0.2:18001"], "ports must differ"),
    (["nohost"], "expected ip:port"),
])
def test_pools_epp_cannot_address_are_refused(addresses, field):
    with pytest.raises(ValueError, match=field):
        ue.target_ports(addresses)


def test_missing_build_is_a_reason_not_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("INFERSHIFT_REALENGINE_DIR", str(tmp_path))
    why = ue.UpstreamEPP().unavailable()
    assert why and "not built" in why and str(tmp_path) in why


def test_ready_pods_reads_epps_gauge():
    text = '# TYPE inference_pool_ready_pods gauge\ninference_pool_ready_pods{name="bench-pool"} 3\n'
    assert ue.ready_pods(text) == 3
    assert ue.ready_pods("other 1\n") is None
