"""Configs the launchers write: Envoy's validated by `envoy --mode validate`, the picker's by its own parser."""
import json

import pytest

from bench.procs import validate_envoy
from bench.routers import FACTORIES, Setup, make
from bench.routers.infershift import VARIANTS, envoy_config, picker_config
from bench.routers.rust_routers import RustRouter
from infershift.picker.config import parse_config

POOL = ["127.0.0.1:18001", "127.0.0.1:18002"]


def test_infershift_envoy_config_validates_with_generous_timeouts(tmp_path):
    cfg = envoy_config(listen_port=18010, admin_port=18011, picker_port=18012, pool=POOL)
    routes = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"]["virtual_hosts"][0]["routes"]
    assert {r["route"]["timeout"] for r in routes} == {"300s"}
    p = tmp_path / "gw.json"
    p.write_text(json.dumps(cfg))
    validate_envoy(p)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_picker_config_parses_with_the_pickers_own_parser(tmp_path, variant):
    setup = Setup(POOL, tmp_path, "base", {"critical-chat": "Critical", "batch-chat": "Sheddable"})
    cfg = parse_config(picker_config(setup, VARIANTS[variant]))
    assert [e.address for e in cfg.endpoints] == POOL
    assert cfg.models["batch-chat"].sheddable and not cfg.models["critical-chat"].sheddable
    assert cfg.models["critical-chat"].targets[0].model == "base"
    scorers = {name for name, _ in cfg.scheduling.profile.scorers}
    assert ("prefix-cache-scorer" in scorers) == (variant == "default")


def test_rust_router_command_lines(tmp_path):
    setup = Setup(POOL, tmp_path, "base")
    sg = RustRouter("sglang", "cache_aware").argv(setup, 18020, 18021)
    assert sg[1:3] == ["-m", "sglang_router.launch_router"]
    assert sg[sg.index("--worker-urls") + 1:sg.index("--worker-urls") + 3] == [f"http://{a}" for a in POOL]
    assert sg[sg.index("--policy") + 1] == "cache_aware" and "127.0.0.1" in sg
    vl = RustRouter("vllm", "sticky_least_loaded").argv(setup, 18020, 18021)
    assert vl[0].endswith("vllm-router") and vl[vl.index("--policy") + 1] == "sticky_least_loaded"


def test_unknown_router_names_are_refused():
    assert "infershift" in FACTORIES
    with pytest.raises(ValueError, match="unknown router 'nginx'"):
        make("nginx")


def test_stop_all_kills_every_live_child_group(tmp_path):
    import os
    import sys

    from bench import procs

    ps = [procs.Proc(f"sleeper{i}", [sys.executable, "-c", "import subprocess,sys; subprocess.run(['sleep','60'])"],
                     tmp_path / f"s{i}.log") for i in range(2)]
    assert all(p.alive() for p in ps) and set(ps) <= procs.LIVE
    procs.stop_all()
    assert not any(p.alive() for p in ps) and not (set(ps) & procs.LIVE)
    for p in ps:  # the whole group is gone, grandchildren included
        try:
            os.killpg(p.pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        assert not alive


def test_infershift_router_serves_through_its_front_envoy(tmp_path):
    """The infershift launcher end to end (Router.start_front_envoy, shared with the upstream-epp
    and Envoy LB routers): real simulators, the picker process, real Envoy from the written
    bootstrap; a request comes back 200 through the base URL; stop() leaves no process behind."""
    from bench.plan import MODEL
    from bench.routers.base import wait_serving
    from bench.routers.infershift import Infershift
    from bench.simpool import SimPool, SimSpec

    with SimPool(SimSpec(servers=2, processes=1, model=MODEL, time_scale=4.0), tmp_path) as pool:
        router = Infershift()
        try:
            url = router.start(Setup(pool.addresses, tmp_path, MODEL))
            boot = json.loads((tmp_path / "infershift-envoy.json").read_text())
            listener = boot["static_resources"]["listeners"][0]["address"]["socket_address"]
            assert url == f"http://127.0.0.1:{listener['port_value']}" == router.base_url
            assert [p.name for p in router.procs] == ["infershift-picker", "infershift-envoy"]
            wait_serving(url, MODEL, timeout=60)
            procs = list(router.procs)
        finally:
            router.stop()
        assert router.procs == [] and not any(p.alive() for p in procs)
