"""``python -m example_app``: run the example portal on Flask's development server."""
from .app import create_app

create_app().run()
