"""The gateway-like Envoy config the picker's tests run (built in picker/envoy_config.py so the
benchmark and the local stack can use the same shape)."""
from infershift.picker.envoy_config import DEST, direct_config, gateway_config  # noqa: F401

__all__ = ["DEST", "direct_config", "gateway_config"]
