"""Every Envoy config variant the picker documents passes `envoy --mode validate`."""
from __future__ import annotations

import pytest

from envoy_gateway import direct_config, gateway_config
from picker.procs import validate_envoy


@pytest.mark.parametrize("kw", [
    {}, {"fail_open": False}, {"full_duplex": True}, {"override_host": True}, {"generate_request_id": False},
])
def test_gateway_variants_validate(kw, tmp_path):
    cfg = gateway_config(listen_port=18080, admin_port=18081, picker_port=9002,
                         pool=["127.0.0.1:8000", "127.0.0.1:8001"], **kw)
    validate_envoy(cfg, str(tmp_path))
    http_filters = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    ext = http_filters[1]["typed_config"]
    assert ext["failure_mode_allow"] is kw.get("fail_open", True)


def test_direct_config_validates_and_bad_config_is_rejected(tmp_path):
    validate_envoy(direct_config(listen_port=18080, admin_port=18081, upstream="127.0.0.1:8000"), str(tmp_path))
    bad = gateway_config(listen_port=18080, admin_port=18081, picker_port=9002, pool=["127.0.0.1:8000"])
    bad["static_resources"]["clusters"][0]["original_dst_lb_config"]["use_http_heder"] = True
    with pytest.raises(RuntimeError, match="envoy rejected"):
        validate_envoy(bad, str(tmp_path))
