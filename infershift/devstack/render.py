"""A stack's Envoy configuration with a fixed, readable port layout: for review
(`python -m infershift.devstack render`) and the golden files in tests/devstack/testdata."""
from __future__ import annotations

from pathlib import Path

from infershift.spec import StackSpec

from . import dataplane, envoy_config, sims
from .dataplane import Endpoint, Ports

ADMIN_PORT = 9901
XDS_DIR = Path("/devstack/xds")


def fixed_plane(spec: StackSpec) -> dataplane.DataPlane:
    """Listeners at their stack ports; pool i at 10000+i (picker 11000+i); service j's
    replicas from 20000+100*j."""
    endpoints = {}
    for j, (name, svc) in enumerate(spec.services.items()):
        models = tuple(sorted(svc.serves))
        endpoints[name] = [
            Endpoint(f"127.0.0.1:{20000 + 100 * j + i}", sims.pod_name(name, i), name, models)
            for i in range(svc.replicas)
        ]
    ports = Ports(
        listeners={lst.name: lst.port for lst in spec.gateway.listeners},
        pools={p: 10000 + i for i, p in enumerate(spec.pools)},
        pickers={p: 11000 + i for i, p in enumerate(spec.pools)},
    )
    return dataplane.build(spec, endpoints, ports)


def render(spec: StackSpec) -> dict:
    """{'bootstrap': ..., 'routes': {file name: RDS document}}"""
    plane = fixed_plane(spec)
    return {
        "bootstrap": envoy_config.bootstrap(plane, ADMIN_PORT, XDS_DIR),
        "routes": {p.name: doc for p, doc in envoy_config.route_files(plane, XDS_DIR, "1").items()},
    }
