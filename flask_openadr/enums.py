"""The OpenADR 2.0b enumerations the codec and the services both check, in XSD order.

One place for each list: the codec validates documents against them and the services validate
what the application builds (an event it adds, an opt answer it records).
"""
from __future__ import annotations

#: eventStatus. "none" is in the XSD but never used for events (protocol notes 5.2).
EVENT_STATUSES = ("none", "far", "near", "active", "completed", "cancelled")

#: signalType. It has no "x-" extension tokens.
SIGNAL_TYPES = (
    "delta", "level", "multiplier", "price", "priceMultiplier", "priceRelative", "setpoint",
    "x-loadControlCapacity", "x-loadControlLevelOffset", "x-loadControlPercentOffset",
    "x-loadControlSetpoint",
)

#: signalName; "x-" extension tokens are allowed besides these. "simple" is 2.0a's spelling.
SIGNAL_NAMES = (
    "SIMPLE", "simple", "ELECTRICITY_PRICE", "ENERGY_PRICE", "DEMAND_CHARGE", "BID_PRICE",
    "BID_LOAD", "BID_ENERGY", "CHARGE_STATE", "LOAD_DISPATCH", "LOAD_CONTROL",
)

#: optType (rule 16: a VTN understands both).
OPT_TYPES = ("optIn", "optOut")

#: oadrResponseRequired.
RESPONSE_REQUIRED = ("always", "never")
