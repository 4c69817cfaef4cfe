"""The local stack: a stack's gateway data plane (Envoy, pickers, simulated servers) as
local processes, with live weight changes. See devstack/README.md; API: devstack.stack.run."""
