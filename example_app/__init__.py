"""An example utility portal embedding flask-openadr; see ``example_app/app.py``."""
