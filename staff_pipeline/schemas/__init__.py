"""pandera schemas, one module per layer (config, raw, staging, conformed, marts)."""
