"""Fuzz tests."""
