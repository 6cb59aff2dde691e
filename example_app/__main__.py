"""``python -m example_app``: run the example portal on Flask's development server."""
from .app import create_app

# The development server speaks plain HTTP, so VENs cannot present client certificates: this
# local run identifies them by venID alone (the VTN logs a warning saying so). A deployment keeps
# the default, certificates required; see docs/security.rst.
create_app({"OPENADR_REQUIRE_CLIENT_CERT": False}).run()
