"""nodereach: make peer-to-peer nodes reachable.

Finds out why peers cannot reach a node (NAT layers, RFC 4787 behaviour, CGNAT, filters), fixes what can
be fixed (port mappings that keep themselves alive), proves the result from outside (dial-back), and says
what to do next.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
