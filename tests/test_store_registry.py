"""Backends plugging in by URI scheme: register_backend() and the flask_openadr.stores entry
points, and the single_process attribute the extension reads instead of a class check."""
from __future__ import annotations

import sys

import pytest
from flask import Flask

from flask_openadr import VTN, codec
from flask_openadr import store as store_package
from flask_openadr.errors import ConfigurationError
from flask_openadr.store import open_store, register_backend
from flask_openadr.store.memory import MemoryStore
from flask_openadr.store.sqlite import SQLiteStore
from flask_openadr.testing import make_certificate


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch):
    """Each test starts with no registrations and re-reads the entry points."""
    monkeypatch.setattr(store_package, "_registered", {})
    monkeypatch.setattr(store_package, "_entry_points", None)


class TaggedMemoryStore(MemoryStore):
    """A custom backend: a memory store that remembers the URI it was opened with."""

    def __init__(self, uri: str, instance_path: str | None) -> None:
        super().__init__()
        self.opened_with = (uri, instance_path)


def tagged(uri, *, instance_path=None):
    return TaggedMemoryStore(uri, instance_path)


def test_register_backend_opens_uris_of_its_scheme():
    register_backend("custom", tagged)
    store = open_store("CUSTOM://anything/at-all", instance_path="/i")
    assert isinstance(store, TaggedMemoryStore)
    assert store.opened_with == ("CUSTOM://anything/at-all", "/i")


def test_register_backend_takes_a_module_name_imported_at_first_open():
    register_backend("mem2", "flask_openadr.store.memory")
    with pytest.raises(ConfigurationError, match="memory://"):
        open_store("mem2://")  # memory.from_uri itself refuses any other scheme: it was called


def test_register_backend_may_take_over_a_built_in_scheme_and_be_removed_again(tmp_path):
    register_backend("sqlite", tagged)
    assert isinstance(open_store(f"sqlite:///{tmp_path / 'x.sqlite'}"), TaggedMemoryStore)
    register_backend("sqlite", None)
    assert isinstance(open_store(f"sqlite:///{tmp_path / 'x.sqlite'}"), SQLiteStore)


@pytest.mark.parametrize("scheme", ["", "Upper", "1abc", "with space", "a:b", None])
def test_register_backend_refuses_a_scheme_that_is_not_one(scheme):
    with pytest.raises(ValueError, match="scheme"):
        register_backend(scheme, tagged)


def test_register_backend_refuses_a_factory_that_is_not_one():
    with pytest.raises(ValueError, match="factory"):
        register_backend("custom", 42)


def test_unknown_scheme_error_lists_registered_schemes():
    register_backend("custom", tagged)
    with pytest.raises(ConfigurationError, match="custom://"):
        open_store("nosuchdb://x")


def install_distribution(tmp_path, monkeypatch, entry_points: str) -> None:
    """Put a real installed distribution (a .dist-info folder) with these entry points on
    sys.path, as pip would, with a module holding the factory."""
    info = tmp_path / "site" / "vtn_store_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vtn-store-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)
    (tmp_path / "site" / "vtn_store_plugin.py").write_text(
        "from flask_openadr.store.memory import MemoryStore\n"
        "class PluginStore(MemoryStore):\n"
        "    pass\n"
        "def factory(uri, *, instance_path=None):\n"
        "    return PluginStore()\n"
        "def from_uri(uri, *, instance_path=None):\n"
        "    return PluginStore()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "vtn_store_plugin", raising=False)


def test_an_installed_entry_point_plugs_a_backend_in(tmp_path, monkeypatch):
    install_distribution(tmp_path, monkeypatch, "[flask_openadr.stores]\n"
                                                "plugin = vtn_store_plugin:factory\n"
                                                "plugmod = vtn_store_plugin\n")
    assert type(open_store("plugin://x")).__name__ == "PluginStore"
    assert type(open_store("plugmod://x")).__name__ == "PluginStore"  # a module: its from_uri


def test_an_entry_point_never_replaces_a_built_in_backend(tmp_path, monkeypatch):
    install_distribution(tmp_path, monkeypatch, "[flask_openadr.stores]\n"
                                                "memory = vtn_store_plugin:factory\n")
    assert type(open_store("memory://")) is MemoryStore


def test_stores_say_whether_they_are_single_process(tmp_path):
    assert MemoryStore.single_process is True
    assert open_store(f"sqlite:///{tmp_path / 'x.sqlite'}").single_process is False


def test_a_custom_single_process_store_is_warned_about_under_many_processes(tmp_path, caplog):
    register_backend("custom", tagged)
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config["OPENADR_STORE_URI"] = "custom://"
    VTN(app)
    response = app.test_client().post(
        "/OpenADR2/Simple/2.0b/EiRegisterParty",
        data=codec.encode("oadrQueryRegistration", {"request_id": "q"}),
        content_type="application/xml",
        environ_overrides={"wsgi.multiprocess": True,
                           "SSL_CLIENT_CERT": make_certificate("multi").pem})
    assert response.status_code == 200
    assert any("multi-process" in record.getMessage() for record in caplog.records)
