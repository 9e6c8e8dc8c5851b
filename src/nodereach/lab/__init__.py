"""Simulated networks with real kernel NAT (Linux network namespaces + nftables). See docs/lab.md.

    from nodereach.lab import Lab
    with Lab("cgnat") as lab:
        lab.exec("client", ["ping", "-c1", "203.0.113.10"])
"""

from nodereach.lab.core import Lab, check_environment
from nodereach.lab.netns import LabError
from nodereach.lab.scenarios import SCENARIOS, GroundTruth, Scenario, get_scenario

__all__ = ["SCENARIOS", "GroundTruth", "Lab", "LabError", "Scenario", "check_environment", "get_scenario"]
