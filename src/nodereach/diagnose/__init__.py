"""The checks that make a reachability report (`nodereach check`)."""
