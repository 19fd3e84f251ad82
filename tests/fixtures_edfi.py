"""Fixtures for the edfi tests."""
