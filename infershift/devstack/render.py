"""Each stage of the local translation with a fixed, readable port layout: for review
(`python -m infershift.devstack render`) and the golden files in tests/devstack/testdata."""
from __future__ import annotations

from pathlib import Path

import yaml

from . import dataplane, envoy_config, ir, sims, translate
from .dataplane import Endpoint, Ports

ADMIN_PORT = 9901
XDS_DIR = Path("/devstack/xds")


def fixed_plane(gw: ir.Gateway) -> dataplane.DataPlane:
    """Listeners at their own ports; pool i at 10000+i (picker 11000+i); Deployment j's
    replicas from 20000+100*j."""
    endpoints = {}
    for j, group in enumerate(gw.servers):
        models = tuple(sorted(group.server.serves))
        endpoints[group.name] = [
            Endpoint(f"127.0.0.1:{20000 + 100 * j + i}", sims.pod_name(group.name, i), group.name, models)
            for i in range(group.replicas)
        ]
    ports = Ports(
        listeners={p.key: p.port for p in gw.ports},
        pools={p.name: 10000 + i for i, p in enumerate(gw.pools)},
        pickers={p.name: 11000 + i for i, p in enumerate(gw.pools)},
    )
    return dataplane.build(gw, endpoints, ports)


def envoy(gw: ir.Gateway) -> dict:
    """{'bootstrap': ..., 'routes': {file name: RDS document}}"""
    plane = fixed_plane(gw)
    return {
        "bootstrap": envoy_config.bootstrap(plane, ADMIN_PORT, XDS_DIR),
        "routes": {p.name: doc for p, doc in envoy_config.route_files(plane, XDS_DIR, "1").items()},
    }


def render(objects: list[dict]) -> dict:
    return envoy(translate.translate(objects))


def dump_ir(gw: ir.Gateway) -> str:
    return yaml.safe_dump(gw.to_dict(), sort_keys=False, width=120)
