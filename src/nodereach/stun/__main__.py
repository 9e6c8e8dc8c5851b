"""`python -m nodereach.stun ...`: the STUN server as a process (see nodereach.stun.script)."""

from nodereach.stun.script import main

main()
