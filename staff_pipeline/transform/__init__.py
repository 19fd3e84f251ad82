"""Staging, quality gates, identity matching and the conformed model, as SQL over the warehouse."""
