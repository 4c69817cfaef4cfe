"""Routing quality and overhead benchmarks: infershift against the routers people pick instead (see bench/README.md)."""
