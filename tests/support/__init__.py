"""What the tests share besides fixtures (tests/conftest.py holds those), imported as
``from tests.support.servers import Gunicorn``: constants and helper classes, the real servers
the tests start, and the small apps those servers load by module path.

Modules of plain helpers: ``clock`` (T0, FrozenClock), ``vens`` (the validating VEN test client),
``backends`` (the store URIs and the servers they need), ``certs`` and ``pki`` (test
certificates), ``xsd`` (the official schema), ``strategies`` (hypothesis payloads), ``hostile``
(request checks for the fuzz and limits tests), ``forking`` (child processes), ``outage`` (a store
server going away), ``counting`` (a store that counts its calls). Servers: ``servers`` (gunicorn),
``nginx``, ``e2e`` (gunicorn on ``e2e_app`` with an operator's view of the store), ``push_ven``.
Apps and configs those servers load: ``e2e_app``, ``faults_app``, ``identity_app``,
``liveness_app``, ``liveness_gunicorn_conf``.
"""
