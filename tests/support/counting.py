"""A real store whose calls are counted, for the tests of what a request costs the store."""
from __future__ import annotations


class CountingStore:
    """A real store, with every call counted by method name."""

    def __init__(self, store):
        self._store = store
        self.calls: list[str] = []

    def __getattr__(self, name):
        attribute = getattr(self._store, name)
        if name.startswith("_") or not callable(attribute):
            return attribute

        def counted(*args, **kwargs):
            self.calls.append(name)
            return attribute(*args, **kwargs)

        return counted
