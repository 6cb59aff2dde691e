"""Caller identity: certificate fingerprints and where the client certificate comes from."""
