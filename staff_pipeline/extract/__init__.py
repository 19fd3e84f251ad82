"""Extract and land: plain functions that pull the sources and write the raw layer."""
