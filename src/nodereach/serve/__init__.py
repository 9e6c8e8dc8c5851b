"""`nodereach serve`: STUN, dial-back, web page and metrics in one process."""
