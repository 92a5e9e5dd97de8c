"""Wiring: configuration, the service tree, the twistd plugin's entry points."""
