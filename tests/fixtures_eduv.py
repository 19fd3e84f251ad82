"""Fixtures for the eduv tests."""
