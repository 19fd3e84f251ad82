"""Fixtures for the sis tests."""
