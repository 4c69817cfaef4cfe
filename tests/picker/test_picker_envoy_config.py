"""Every Envoy config variant the picker documents passes `envoy --mode validate`; the filter module
imports without gRPC (the Pulumi virtualenv's local stack imports it)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from envoy_gateway import direct_config, gateway_config
from infershift.picker.envoy_config import RESTORE_HEADER, ext_proc_filter, ext_proc_filters
from bench.pickerbench.procs import REPO, validate_envoy


def http_filters(cfg):
    return cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]


@pytest.mark.parametrize("kw", [
    {}, {"fail_open": False}, {"full_duplex": True}, {"override_host": True}, {"generate_request_id": False},
    {"classic": True}, {"classic": True, "fail_open": False},
])
def test_gateway_variants_validate(kw, tmp_path):
    cfg = gateway_config(listen_port=18080, admin_port=18081, picker_port=9002,
                         pool=["127.0.0.1:8000", "127.0.0.1:8001"], **kw)
    validate_envoy(cfg, str(tmp_path))
    names = [f["name"] for f in http_filters(cfg)]
    one_rt = not (kw.get("classic") or kw.get("full_duplex"))
    want = ["envoy.filters.http.buffer", "envoy.filters.http.ext_proc", "infershift.picker.response"] if one_rt \
        else ["envoy.filters.http.ext_proc"]
    assert names == ["envoy.filters.http.header_to_metadata", *want, "envoy.filters.http.router"]
    ext = next(f for f in http_filters(cfg) if f["name"] == "envoy.filters.http.ext_proc")["typed_config"]
    assert ext["failure_mode_allow"] is kw.get("fail_open", True)
    assert ext["metadata_options"]["receiving_namespaces"]["untyped"] == ["envoy.lb", "infershift.picker"]
    if one_rt:
        assert ext["processing_mode"]["response_header_mode"] == "SKIP"
        assert ext["send_body_without_waiting_for_header_response"] is True
        resp = http_filters(cfg)[3]["typed_config"]["extension_config"]["typed_config"]
        assert resp["failure_mode_allow"] is kw.get("fail_open", True) and resp["allow_mode_override"] is True
    routes = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"]["virtual_hosts"][0]["routes"]
    assert all(r["request_headers_to_remove"] == [RESTORE_HEADER] for r in routes)


def test_filter_helpers_match_the_bootstrap():
    cfg = gateway_config(listen_port=1, admin_port=2, picker_port=3, pool=["127.0.0.1:8000"], message_timeout="2s")
    assert http_filters(cfg)[1:4] == ext_proc_filters("picker", fail_open=True, message_timeout="2s")
    single = ext_proc_filter("epp", fail_open=False, message_timeout="1s", classic=True)
    assert single["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] == "epp"
    assert single["typed_config"]["processing_mode"]["request_body_mode"] == "BUFFERED"


def test_envoy_config_imports_without_grpc():
    code = ("import sys; sys.modules['grpc'] = None; sys.modules['envoy'] = None; sys.modules['google.protobuf'] = None\n"
            "import infershift.picker.envoy_config as e; print(len(e.ext_proc_filters('p', fail_open=True)))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=str(REPO),
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 0 and r.stdout.strip() == "3", r.stderr


def test_direct_config_validates_and_bad_config_is_rejected(tmp_path):
    validate_envoy(direct_config(listen_port=18080, admin_port=18081, upstream="127.0.0.1:8000"), str(tmp_path))
    bad = gateway_config(listen_port=18080, admin_port=18081, picker_port=9002, pool=["127.0.0.1:8000"])
    bad["static_resources"]["clusters"][0]["original_dst_lb_config"]["use_http_heder"] = True
    with pytest.raises(RuntimeError, match="envoy rejected"):
        validate_envoy(bad, str(tmp_path))
