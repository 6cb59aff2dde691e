"""The portal's HTML forms (Flask-WTF): parsing, required fields and the CSRF token.

What a value must be for the VTN (a known target, a start from now on, a level the signal
allows) is checked in :mod:`example_app.operations`, for the forms and the JSON API alike.
"""
from __future__ import annotations

import math
from datetime import timezone

from flask_wtf import FlaskForm
from wtforms import DateTimeLocalField, FloatField, IntegerField, PasswordField, SelectField, \
    StringField
from wtforms.validators import DataRequired, InputRequired, NumberRange, ValidationError

from .operations import MAX_DURATION_MINUTES

#: The signals the create form offers, as signalName/signalType. (Plain strings: WTForms 3.3
#: deprecates (value, label) tuples and older releases lack their replacement.)
SIGNALS = ["SIMPLE/level", "ELECTRICITY_PRICE/price", "LOAD_DISPATCH/setpoint"]


def finite(form: FlaskForm, field: FloatField) -> None:
    # float() reads "nan" and "inf", which are no levels.
    if field.data is not None and not math.isfinite(field.data):
        raise ValidationError(f"{field.data} is not a number a VEN can act on")


class LoginForm(FlaskForm):
    user = StringField("User", validators=[DataRequired()])
    password = PasswordField("Password", validators=[DataRequired()])


class EventTimingForm(FlaskForm):
    # datetime-local has no time zone: the form says the times are UTC, as the pages show them.
    start = DateTimeLocalField("Start (UTC)", format=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"],
                               validators=[InputRequired()])
    duration_minutes = IntegerField("Duration (minutes)",
                                    validators=[InputRequired(),
                                                NumberRange(min=1, max=MAX_DURATION_MINUTES)])
    level = FloatField("Level", validators=[InputRequired(), finite])

    def start_utc(self):
        return self.start.data.replace(tzinfo=timezone.utc)


class EventForm(EventTimingForm):
    target = StringField("Target (group, VEN name or venID)", validators=[DataRequired()])
    signal = SelectField("Signal", choices=SIGNALS, default="SIMPLE/level")
