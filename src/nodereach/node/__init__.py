"""The node's own view: who listens on its ports on this host, what the node software says about itself (its
RPC), and whether what it advertises to the network matches what peers can reach.

Modules: `listeners` (sockets of this host, no root), `catalog` (known node software: ports, RPC, adapter),
`adapters/` (one per software: Bitcoin Core, Ethereum execution and consensus clients, kubo, monerod, lnd,
Transmission, Syncthing), `reader` (--node, detection, credentials, one bounded read), `advertised`
(advertised versus observed), `view` (the check's node stage), `report` / `model` (the report's node block).
Nothing here is imported on the check's start-up path until it is used.
"""
