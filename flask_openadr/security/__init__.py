"""Caller identity: certificate fingerprints, where the client certificate comes from, XML
signatures and replay protection.

Internal: applications configure these with ``OPENADR_*`` keys and the ``flask openadr
fingerprint`` command; the modules may change in any release (see ``docs/api.rst``).
"""
