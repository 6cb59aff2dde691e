"""The VEN test client the HTTP tests use: every 200 reply checked against the 2.0b XSD."""
from __future__ import annotations

from flask_openadr.testing import VENTestClient

from tests.support.xsd import assert_valid


class ValidatingVEN(VENTestClient):
    """A VEN test client that also checks every 200 reply against the official 2.0b XSD."""

    def post(self, service, body, content_type="application/xml"):
        response = super().post(service, body, content_type)
        if response.status_code == 200:
            assert_valid(response.get_data())
            assert response.headers["Content-Type"].startswith("application/xml")
            assert int(response.headers["Content-Length"]) == len(response.get_data())
        return response


def make_ven(app, ven_name="ven-one", **kwargs) -> ValidatingVEN:
    return ValidatingVEN(app.test_client(), ven_name=ven_name, **kwargs)
