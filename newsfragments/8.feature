An SSH manhole with admin commands (interactive, or one command with JSON output), a
Prometheus metrics endpoint, SIGHUP reload of live settings, a draining SIGTERM, and JSON
logs through twistd's --logger.
