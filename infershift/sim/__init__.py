"""A vLLM-compatible model-server simulator (see sim/README.md)."""
