"""Configuration: keys, defaults, precedence, the YAML file and its errors."""
from __future__ import annotations

import os
from datetime import timedelta

import pytest
from flask import Flask

from flask_openadr import VTN, ConfigurationError


def make_app(tmp_path, **config):
    app = Flask("cfg", instance_path=str(tmp_path / "instance"))
    app.config.update(config)
    return app


def settings(app):
    return app.extensions["openadr"].context.settings


def test_defaults_are_set_with_setdefault_and_kept_when_given(tmp_path):
    app = make_app(tmp_path, OPENADR_VTN_ID="MINE")
    VTN(app)
    assert app.config["OPENADR_VTN_ID"] == "MINE"
    assert app.config["OPENADR_URL_PREFIX"] == "/OpenADR2/Simple/2.0b"
    assert app.config["OPENADR_POLL_FREQUENCY"] == timedelta(seconds=10)
    assert app.config["OPENADR_OFFLINE_AFTER_MISSED_POLLS"] == 3
    assert app.config["OPENADR_MAX_MESSAGE_BYTES"] == 1024 * 1024
    assert settings(app).vtn_id == "MINE"


def test_default_store_is_sqlite_in_the_instance_folder(tmp_path):
    app = make_app(tmp_path)
    vtn = VTN(app)
    with app.app_context():
        vtn.store.put_ven({"ven_id": "v", "registration_id": None})
    assert os.path.exists(tmp_path / "instance" / "openadr.sqlite3")


def test_constructor_wins_over_config_and_config_over_yaml(tmp_path):
    path = tmp_path / "openadr.yaml"
    path.write_text("OPENADR_VTN_ID: FROM-YAML\nOPENADR_POLL_FREQUENCY: 60\n"
                    "OPENADR_MAX_MESSAGE_BYTES: 5000\nAPP_SETTING: ignored\n")
    app = make_app(tmp_path, OPENADR_CONFIG_FILE=str(path), OPENADR_POLL_FREQUENCY=30,
                   OPENADR_STORE_URI="memory://")
    VTN(app, max_message_bytes=7000)
    s = settings(app)
    assert s.vtn_id == "FROM-YAML"
    assert s.poll_frequency == timedelta(seconds=30)
    assert s.max_message_bytes == 7000
    assert app.config["OPENADR_VTN_ID"] == "FROM-YAML"


def test_config_file_given_to_the_constructor(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("OPENADR_URL_PREFIX: /oadr/\n")
    app = make_app(tmp_path, OPENADR_STORE_URI="memory://")
    VTN(app, config_file=str(path))
    assert settings(app).url_prefix == "/oadr"
    assert app.test_client().get("/oadr/OadrPoll").status_code == 405


@pytest.mark.parametrize("text, fragment", [
    ("OPENADR_POLL_FREQUENCY: often\n", "OPENADR_POLL_FREQUENCY"),
    ("OPENADR_POLL_FREQENCY: 10\n", "OPENADR_POLL_FREQENCY"),
    ("- a\n- b\n", "mapping"),
    ("OPENADR_VTN_ID: [unclosed\n", "not valid YAML"),
    ("OPENADR_URL_PREFIX: no-slash\n", "OPENADR_URL_PREFIX"),
    ("OPENADR_OFFLINE_AFTER_MISSED_POLLS: -1\n", "OPENADR_OFFLINE_AFTER_MISSED_POLLS"),
])
def test_bad_yaml_is_a_clear_start_up_error(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    app = make_app(tmp_path, OPENADR_CONFIG_FILE=str(path), OPENADR_STORE_URI="memory://")
    with pytest.raises(ConfigurationError) as info:
        VTN(app)
    assert fragment in str(info.value)
    assert "openadr" not in app.extensions


def test_missing_yaml_file_names_the_path(tmp_path):
    app = make_app(tmp_path, OPENADR_CONFIG_FILE=str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigurationError, match="nope.yaml"):
        VTN(app)


@pytest.mark.parametrize("value, expected", [
    (30, timedelta(seconds=30)),
    (timedelta(minutes=2), timedelta(minutes=2)),
    (2.0, timedelta(seconds=2)),
])
def test_poll_frequency_accepts_seconds_or_timedelta(tmp_path, value, expected):
    app = make_app(tmp_path, OPENADR_STORE_URI="memory://", OPENADR_POLL_FREQUENCY=value)
    VTN(app)
    assert settings(app).poll_frequency == expected


@pytest.mark.parametrize("value", [0, -5, 1.5, "10", True, timedelta(0)])
def test_bad_poll_frequency_is_refused(tmp_path, value):
    app = make_app(tmp_path, OPENADR_STORE_URI="memory://", OPENADR_POLL_FREQUENCY=value)
    with pytest.raises(ConfigurationError, match="OPENADR_POLL_FREQUENCY"):
        VTN(app)


def test_unknown_constructor_option_is_a_type_error():
    with pytest.raises(TypeError, match="pol_frequency"):
        VTN(pol_frequency=3)


def test_unknown_store_scheme_is_refused(tmp_path):
    app = make_app(tmp_path, OPENADR_STORE_URI="mongodb://x")
    with pytest.raises(ConfigurationError, match="mongodb://x"):
        VTN(app)


def test_client_certificate_settings_default_to_required_with_no_trusted_proxy(tmp_path):
    app = make_app(tmp_path, OPENADR_STORE_URI="memory://")
    VTN(app)
    s = settings(app)
    assert s.require_client_cert is True
    assert (s.client_cert_header, s.client_verify_header) == ("X-SSL-Client-Cert",
                                                              "X-SSL-Client-Verify")
    assert s.trusted_proxies == ()
    assert app.config["OPENADR_REQUIRE_CLIENT_CERT"] is True


@pytest.mark.parametrize("value", [
    "127.0.0.1, 10.0.0.0/8,::1, fd00::/8",
    ["127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8"],
    ("127.0.0.1", " 10.0.0.0/8 ", "::1", "fd00::/8", ""),
])
def test_trusted_proxies_take_a_list_or_a_comma_separated_string(tmp_path, value):
    app = make_app(tmp_path, OPENADR_STORE_URI="memory://", OPENADR_TRUSTED_PROXIES=value)
    VTN(app)
    assert [str(n) for n in settings(app).trusted_proxies] == [
        "127.0.0.1/32", "10.0.0.0/8", "::1/128", "fd00::/8"]


@pytest.mark.parametrize("value, fragment", [
    ("127.0.0.1, proxy.example", "'proxy.example'"),
    (["10.0.0.1/8"], "'10.0.0.1/8'"),  # host bits set: a typo, not a network
    (["::1", 42], "42"),
    ("300.1.1.1", "'300.1.1.1'"),
    (8080, "8080"),
])
def test_a_bad_trusted_proxy_entry_is_named_at_start_up(tmp_path, value, fragment):
    app = make_app(tmp_path, OPENADR_STORE_URI="memory://", OPENADR_TRUSTED_PROXIES=value)
    with pytest.raises(ConfigurationError, match="OPENADR_TRUSTED_PROXIES") as raised:
        VTN(app)
    assert fragment in str(raised.value)


@pytest.mark.parametrize("key, value", [
    ("OPENADR_REQUIRE_CLIENT_CERT", "false"),  # a string: truthy, and surely not meant
    ("OPENADR_REQUIRE_CLIENT_CERT", 0),
    ("OPENADR_CLIENT_CERT_HEADER", "X_SSL_Client_Cert"),
    ("OPENADR_CLIENT_CERT_HEADER", ""),
    ("OPENADR_CLIENT_VERIFY_HEADER", "X-SSL Verify"),
])
def test_bad_client_certificate_settings_are_refused(tmp_path, key, value):
    app = make_app(tmp_path, OPENADR_STORE_URI="memory://", **{key: value})
    with pytest.raises(ConfigurationError, match=key) as raised:
        VTN(app)
    assert repr(value) in str(raised.value)


def test_client_certificate_settings_from_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("OPENADR_REQUIRE_CLIENT_CERT: false\n"
                    "OPENADR_TRUSTED_PROXIES: [127.0.0.1, '::1']\n"
                    "OPENADR_CLIENT_CERT_HEADER: X-Client-Cert\n")
    app = make_app(tmp_path, OPENADR_STORE_URI="memory://", OPENADR_CONFIG_FILE=str(path))
    VTN(app)
    s = settings(app)
    assert s.require_client_cert is False
    assert [str(n) for n in s.trusted_proxies] == ["127.0.0.1/32", "::1/128"]
    assert s.client_cert_header == "X-Client-Cert"


def test_redelivery_after_takes_seconds_with_fractions_or_a_timedelta(tmp_path):
    app = make_app(tmp_path, OPENADR_STORE_URI="memory://")
    VTN(app)
    assert settings(app).redelivery_after is None  # two poll intervals, decided per VEN
    for given, expected in ((2.5, timedelta(seconds=2.5)), (timedelta(minutes=2),
                                                              timedelta(minutes=2))):
        app = make_app(tmp_path, OPENADR_STORE_URI="memory://", OPENADR_REDELIVERY_AFTER=given)
        VTN(app)
        assert settings(app).redelivery_after == expected
    for bad in (0, -1, "10", True):
        with pytest.raises(ConfigurationError, match="OPENADR_REDELIVERY_AFTER"):
            VTN(make_app(tmp_path, OPENADR_STORE_URI="memory://",
                         OPENADR_REDELIVERY_AFTER=bad))
