"""infershift: an LLM inference gateway (Gateway API + Inference Extension) on ACK, GKE or any
cluster as Pulumi components, with a local twin that runs the same objects on real Envoy.

Subpackages: `spec` (typed stack config), `components` (Pulumi components and their pure
manifest builders), `devstack` (the local stack), `picker` (the endpoint picker; its own
virtualenv and image), `sim` (a vLLM-compatible simulator). Importing this package imports
nothing else, so the picker's environment never needs Pulumi.
"""
