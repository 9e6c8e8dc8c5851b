"""Dial-back reachability: the service that tries to reach a node from outside, and its client."""
