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

#: Device classes (endDeviceAsset/mrid) a target may name: the certification harness accepts
#: these values only.
DEVICE_CLASSES = (
    "Thermostat", "Strip_Heater", "Baseboard_Heater", "Water_Heater", "Pool_Pump", "Sauna",
    "Hot_tub", "Smart_Appliance", "Irrigation_Pump", "Managed_Commercial_and_Industrial_Loads",
    "Simple_Residential_On_Off_Loads", "Exterior_Lighting", "Interior_Lighting",
    "Electric_Vehicle", "Generation_Systems", "Load_Control_Switch", "Smart_Inverter", "EVSE",
    "RESU", "Energy_Management_System", "Smart_Energy_Module", "Storage",
)
