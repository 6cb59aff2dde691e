"""Operator login: one user and a password hash from the settings, kept in Flask's session.

One configured operator needs no user model, loader or remember-me cookie, so a few lines here
serve better than Flask-Login; CSRF protection and form validation come from Flask-WTF, which
does them well. Pages redirect to the login form; JSON endpoints answer 403.
"""
from __future__ import annotations

import functools
import hmac
from typing import Any, Callable
from urllib.parse import urlsplit

import click
from flask import Blueprint, current_app, jsonify, redirect, render_template, request, session, \
    url_for
from flask.cli import with_appcontext
from werkzeug.security import check_password_hash, generate_password_hash

from .forms import LoginForm

bp = Blueprint("auth", __name__)


def operator() -> str | None:
    """The logged-in operator's name, or None."""
    return session.get("operator")


def refuse_anonymous() -> Any:
    """The answer to a caller who has not logged in: 403 for the JSON API, else the login form."""
    if request.path.startswith("/api/"):
        return jsonify(error="log in first: POST /api/login with user and password"), 403
    return redirect(url_for("auth.login", next=request.full_path))


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if operator() is None:
            return refuse_anonymous()
        return view(*args, **kwargs)
    return wrapped


def credentials_match(user: str, password: str) -> bool:
    """Whether the user is the configured operator and the password matches its hash. With no
    hash configured nobody logs in (fails closed)."""
    expected = current_app.config["PORTAL_PASSWORD_HASH"]
    same_user = hmac.compare_digest(user.encode(), str(current_app.config["PORTAL_USER"]).encode())
    # The hash is checked even for a wrong user, so timing does not tell which was wrong.
    good = check_password_hash(expected, password) if expected else False
    return same_user and good


def _start_session(user: str) -> None:
    session.clear()  # nothing from before the login carries over
    session["operator"] = user


def safe_next(target: str | None) -> str:
    # Only a path on this site: an absolute or scheme-relative URL would be an open redirect,
    # and browsers read a backslash as a slash (a path starting with slash, backslash, host).
    if target and target.startswith("/") and not target.startswith("//") \
            and "\\" not in target and not urlsplit(target).netloc:
        return target
    return url_for("portal.vens_page")


@bp.route("/login", methods=["GET", "POST"])
def login():
    form = LoginForm()
    configured = bool(current_app.config["PORTAL_PASSWORD_HASH"])
    if form.validate_on_submit():
        if credentials_match(form.user.data, form.password.data):
            _start_session(form.user.data)
            return redirect(safe_next(request.args.get("next")))
        form.password.errors.append("wrong user or password")
    return render_template("login.html", form=form, configured=configured), \
        (400 if form.errors else 200)


@bp.post("/logout")
def logout():
    session.clear()
    return redirect(url_for("auth.login"))


@bp.get("/api/session")
def api_session():
    """The CSRF token a JSON client sends as ``X-CSRFToken``, and who is logged in."""
    from flask_wtf.csrf import generate_csrf

    return jsonify(operator=operator(), csrf_token=generate_csrf())


@bp.post("/api/login")
def api_login():
    data = request.get_json(silent=True)
    if not isinstance(data, dict) or not isinstance(data.get("user"), str) \
            or not isinstance(data.get("password"), str):
        return jsonify(error="send a JSON object with user and password strings"), 400
    if not credentials_match(data["user"], data["password"]):
        return jsonify(error="wrong user or password"), 403
    _start_session(data["user"])
    from flask_wtf.csrf import generate_csrf

    return jsonify(operator=data["user"], csrf_token=generate_csrf())


@click.group("portal")
def portal_cli() -> None:
    """Manage the example portal."""


@portal_cli.command("hash-password")
@click.password_option()
@with_appcontext
def hash_password(password: str) -> None:
    """Print the hash to put in PORTAL_PASSWORD_HASH for PASSWORD."""
    click.echo(generate_password_hash(password))
