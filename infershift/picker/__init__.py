"""infershift endpoint picker: an Envoy ext_proc service that picks a model server per request."""
