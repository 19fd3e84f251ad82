"""Loads into the target systems: marts, diffs against ledgers, sending, journals, reconcile."""
