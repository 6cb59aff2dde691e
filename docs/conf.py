"""Sphinx configuration for the flask-openadr documentation (plain Sphinx, no network access)."""
import os
import sys

# Document the checkout being built, installed or not.
sys.path.insert(0, os.path.abspath(".."))

project = "flask-openadr"
author = "flask-openadr developers"
copyright = "2026, flask-openadr developers"
release = "0.1.0.dev0"
version = "0.1"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build"]
default_role = "code"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"

html_theme = "alabaster"
html_theme_options = {
    "description": "An OpenADR 2.0b VTN as a Flask extension",
    "fixed_sidebar": True,
}
html_static_path = []
