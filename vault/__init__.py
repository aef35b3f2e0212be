"""Secrets at rest, variables, secrets and resources, redaction."""
