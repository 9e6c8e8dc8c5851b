"""`nodereach watch`: keep the node reachable, and say when it stops being so.

Cheap probes often (a STUN Binding per server for the public address, the host's listening sockets, the
node's peer counts), a full check when something changed and at a slow period with jitter, port mappings kept
alive through the portmap keeper (`--keep-mapped`). What is seen goes through a pure detector (detect.py):
a change is declared only after it holds on consecutive observations (hysteresis), node facts get a grace
period after start-up, and each declared change becomes one event (a JSON line on stdout, and the
`--on-change` command / `--webhook`) and moves the Prometheus metrics.

Layout: model (typed observations and changes), policy (the knobs and their defaults), facts (one debounced
value), detect (observations -> declared state, changes, error kinds), schedule (when to probe, check, back
off), samples (declared state -> metric samples), events (JSON lines), then the I/O: probes, listeners,
nodeview, fullcheck, mapping, hooks, exporter, loop (the thin driver on an injected clock), config, command.
"""
