"""Fixtures for the linkit tests."""
