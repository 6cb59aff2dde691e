"""The request pipeline: HTTP-level refusals, protocol errors as paired replies, crash safety."""
from __future__ import annotations

import io

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Response

from flask_openadr import codec
from tests.support.vens import make_ven

PREFIX = "/OpenADR2/Simple/2.0b"


def code(reply):
    return reply["response"]["response_code"]


@pytest.mark.parametrize("service", ["EiRegisterParty", "EiEvent", "EiReport", "EiOpt", "OadrPoll"])
def test_only_post_is_allowed(app, service):
    assert app.test_client().get(f"{PREFIX}/{service}").status_code == 405


def test_unknown_service_is_404(app):
    assert app.test_client().post(f"{PREFIX}/EiNothing", data=b"<x/>").status_code == 404


@pytest.mark.parametrize("body, reason", [
    (b"<oadrPayload", "malformed"),
    (b"not xml at all", "malformed"),
    (b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY e 'boom'>]><x>&e;</x>", "malformed"),
    (b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><x>&e;</x>",
     "malformed"),
    (b"<html xmlns='http://www.w3.org/1999/xhtml'/>", "malformed"),
])
def test_bad_documents_get_400_and_change_nothing(app, vtn, body, reason):
    response = make_ven(app).post("OadrPoll", body)
    assert response.status_code == 400
    assert reason in response.get_data(as_text=True)
    assert "root:" not in response.get_data(as_text=True)  # /etc/passwd was never read
    with app.app_context():
        assert vtn.vens() == []


def test_body_over_the_limit_is_400(app):
    app.extensions["openadr"].context.settings.max_message_bytes = 200
    body = codec.encode("oadrQueryRegistration", {"request_id": "x" * 400})
    response = make_ven(app).post("EiRegisterParty", body)
    assert response.status_code == 400
    assert "larger than 200 bytes" in response.get_data(as_text=True)


def _raw_post(app, service, body, **headers):
    """POST through the WSGI app with the headers given as they are (the test client would
    compute a Content-Length of its own)."""
    ven = make_ven(app)
    environ = {"CONTENT_TYPE": "application/xml", "SSL_CLIENT_CERT": ven.certificate.pem,
               **headers}
    return app.test_client().post(f"{PREFIX}/{service}", input_stream=io.BytesIO(body),
                                  environ_overrides=environ)


def test_body_is_read_by_its_declared_length(app):
    body = codec.encode("oadrQueryRegistration", {"request_id": "by-length"})
    # Bytes after the declared length are not the message's (a pipelined next request).
    response = _raw_post(app, "EiRegisterParty", body + b"<trailing/>",
                         CONTENT_LENGTH=str(len(body)))
    assert response.status_code == 200
    assert codec.decode(response.get_data())[1]["response"]["request_id"] == "by-length"


@pytest.mark.parametrize("declared", ["9" * 40, "1" * 4400, "201"])
def test_declared_length_over_the_limit_is_400_not_an_error(app, vtn, declared):
    # 4,400 digits are more than int() converts by default (a ValueError if parsed as it is).
    app.extensions["openadr"].context.settings.max_message_bytes = 200
    body = codec.encode("oadrQueryRegistration", {"request_id": "1"})
    response = _raw_post(app, "EiRegisterParty", body, CONTENT_LENGTH=declared)
    assert response.status_code == 400
    with app.app_context():
        assert vtn.vens() == []


def test_body_without_a_declared_length_is_read_to_its_end(app):
    # A chunked request as gunicorn passes it on: no CONTENT_LENGTH, and the server ends the
    # stream where the body ends (wsgi.input_terminated).
    body = codec.encode("oadrQueryRegistration", {"request_id": "chunked"})
    environ = EnvironBuilder(path=f"{PREFIX}/EiRegisterParty", method="POST",
                             input_stream=io.BytesIO(body), content_type="application/xml",
                             environ_base={"SSL_CLIENT_CERT": make_ven(app).certificate.pem}
                             ).get_environ()
    del environ["CONTENT_LENGTH"]
    environ["wsgi.input_terminated"] = True
    response = Response.from_app(app, environ)
    assert response.status_code == 200
    assert codec.decode(response.get_data())[1]["response"]["request_id"] == "chunked"


def test_body_shorter_than_declared_is_400(app, vtn):
    body = codec.encode("oadrQueryRegistration", {"request_id": "short"})
    response = _raw_post(app, "EiRegisterParty", body[:-10], CONTENT_LENGTH=str(len(body)))
    assert response.status_code == 400


def test_wrong_content_type_is_400(app):
    body = codec.encode("oadrQueryRegistration", {"request_id": "1"})
    response = make_ven(app).post("EiRegisterParty", body, content_type="application/json")
    assert response.status_code == 400


def test_400_reasons_stay_short_whatever_the_peer_sent(app, vtn):
    body = codec.encode("oadrQueryRegistration", {"request_id": "1"})
    response = make_ven(app).post("EiRegisterParty", body, content_type="application/x" + "y" * 6000)
    assert response.status_code == 400
    assert "Content-Type" in response.get_data(as_text=True)
    assert len(response.get_data()) <= 201
    registration = codec.encode("oadrCreatePartyRegistration", {
        "request_id": "1", "profile_name": "2.0b", "transport_name": "simpleHttp",
        "report_only": False, "xml_signature": False, "ven_name": "v", "http_pull_model": True,
    }).replace(b">simpleHttp<", b">" + b"t" * 1_000_000 + b"<")
    response = make_ven(app).post("EiRegisterParty", registration)
    assert response.status_code == 400
    assert "oadrTransportName" in response.get_data(as_text=True)
    assert len(response.get_data()) <= 201
    with app.app_context():
        assert vtn.vens() == []


def test_payload_at_the_wrong_endpoint_gets_453_in_the_paired_reply(app, registered_ven):
    response = registered_ven.post("EiEvent", codec.encode("oadrPoll",
                                                           {"ven_id": registered_ven.ven_id}))
    assert response.status_code == 200
    name, reply = codec.decode(response.get_data())
    assert name == "oadrResponse" and code(reply) == 453
    assert "OadrPoll" in reply["response"]["response_description"]
    _, reply = registered_ven.send("EiEvent", "oadrQueryRegistration", {"request_id": "q1"})
    assert code(reply) == 453 and reply["response"]["request_id"] == "q1"


def test_unknown_ven_id_gets_452_case_sensitively(app, registered_ven):
    ven_id = registered_ven.ven_id
    registered_ven.ven_id = ven_id.swapcase() if ven_id.swapcase() != ven_id else ven_id + "x"
    name, reply = registered_ven.poll()
    assert name == "oadrResponse" and code(reply) == 452
    assert reply["ven_id"] == registered_ven.ven_id
    name, reply = registered_ven.request_event()
    assert name == "oadrDistributeEvent" and code(reply) == 452 and reply["events"] == []
    assert reply["response"]["request_id"]  # the request's ID echoed


def test_ven_without_registration_gets_463(app, registered_ven):
    registered_ven.cancel_registration()
    name, reply = registered_ven.request_event()
    assert name == "oadrDistributeEvent" and code(reply) == 463


def test_unexpected_handler_error_is_500_with_traceback(tmp_path, clock, caplog):
    from flask import Flask
    from flask_openadr import VTN

    app = Flask("crash", instance_path=str(tmp_path))
    app.config["OPENADR_STORE_URI"] = "memory://"
    vtn = VTN(app, clock=clock)

    @vtn.on_poll
    def poll(ven_id):
        raise ZeroDivisionError("handler bug")

    ven = make_ven(app)
    ven.register()
    response = ven.post("OadrPoll", codec.encode("oadrPoll", {"ven_id": ven.ven_id}))
    assert response.status_code == 500
    assert "ZeroDivisionError" in caplog.text
    with app.app_context():
        # The METADATA report is still queued: the failed poll consumed nothing.
        assert [i["payload_name"] for i in vtn.store.list_outbox(ven.ven_id)] == ["oadrRegisterReport"]


def test_replies_carry_content_length_and_xml_type(app, ven):
    response = ven.post("EiRegisterParty", codec.encode("oadrQueryRegistration",
                                                        {"request_id": "abc"}))
    assert response.status_code == 200
    assert response.mimetype == "application/xml"
    assert int(response.headers["Content-Length"]) == len(response.get_data())
    assert b'schemaVersion="2.0b"' in response.get_data()
