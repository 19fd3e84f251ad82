"""Dagster asset modules, one per stage: extract, staging (gates), conformed, marts, loads."""
