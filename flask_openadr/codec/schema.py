"""The OpenADR 2.0b payloads as immutable model tables, transcribed from the official XSD set.

Each complex type lists its children in XSD sequence order (see :mod:`.fields` for the notation).
Not supported, and refused on input with a MalformedMessage naming the element:

* ``emix:serviceArea`` and ``power:serviceLocation`` in targets (their content is a GML
  FeatureCollection, which no known peer sends);
* Green Button: ``oadr:oadrGBPayload`` report payloads and the ``oadr:oadrGBDataDescription`` item
  base (HISTORY_GREENBUTTON reports);
* the abstract ``power:energyItem`` / ``power:powerItem`` item bases (usable only with
  ``xsi:type``); the concrete energyReal/powerReal/... members are supported.
"""
from __future__ import annotations

from types import MappingProxyType

from .. import enums
from ..protocol import SERVICE_NAMES
from . import values as v
from .fields import Choice, ComplexType, Field, Flatten, Nil, Substitution, ctype, f, q

# ---------------------------------------------------------------- enumerations (from the XSD)

EVENT_STATUS = v.Enum("eventStatus", enums.EVENT_STATUSES)
SIGNAL_TYPE = v.Enum("signalType", enums.SIGNAL_TYPES)
SIGNAL_NAME = v.Enum("signalName", enums.SIGNAL_NAMES, extensible=True)
OPT_TYPE = v.Enum("optType", enums.OPT_TYPES)
OPT_REASON = v.Enum("optReason", [
    "economic", "emergency", "mustRun", "notParticipating", "outageRunStatus", "overrideStatus",
    "participating", "x-schedule"], extensible=True)
RESPONSE_REQUIRED = v.Enum("oadrResponseRequired", enums.RESPONSE_REQUIRED, token=False)
PROFILE_NAME = v.Enum("oadrProfileName", ["2.0a", "2.0b"])
TRANSPORT_NAME = v.Enum("oadrTransportName", ["simpleHttp", "xmpp"])
SERVICE_NAME = v.Enum("oadrServiceName", SERVICE_NAMES)
REPORT_NAME = v.Enum("reportName", [
    "METADATA_HISTORY_USAGE", "HISTORY_USAGE", "METADATA_HISTORY_GREENBUTTON", "HISTORY_GREENBUTTON",
    "METADATA_TELEMETRY_USAGE", "TELEMETRY_USAGE", "METADATA_TELEMETRY_STATUS", "TELEMETRY_STATUS"],
    extensible=True)
REPORT_TYPE = v.Enum("reportType", [
    "reading", "usage", "demand", "setPoint", "deltaUsage", "deltaSetPoint", "deltaDemand",
    "baseline", "deviation", "avgUsage", "avgDemand", "operatingState",
    "upRegulationCapacityAvailable", "downRegulationCapacityAvailable", "regulationSetpoint",
    "storedEnergy", "targetEnergyStorage", "availableEnergyStorage", "price", "level",
    "powerFactor", "percentUsage", "percentDemand", "x-resourceStatus"], extensible=True)
READING_TYPE = v.Enum("readingType", [
    "Direct Read", "Net", "Allocated", "Estimated", "Summed", "Derived", "Mean", "Peak", "Hybrid",
    "Contract", "Projected", "x-RMS", "x-notApplicable"], extensible=True)
DATA_QUALITY = v.Enum("oadrDataQuality", [
    "No Quality - No Value", "No New Value - Previous Value Used", "Quality Bad - Non Specific",
    "Quality Bad - Configuration Error", "Quality Bad - Not Connected",
    "Quality Bad - Device Failure", "Quality Bad - Sensor Failure",
    "Quality Bad - Last Known Value", "Quality Bad - Comm Failure", "Quality Bad - Out of Service",
    "Quality Uncertain - Non Specific", "Quality Uncertain - Last Usable Value",
    "Quality Uncertain - Sensor Not Accurate", "Quality Uncertain - EU Units Exceeded",
    "Quality Uncertain - Sub Normal", "Quality Good - Non Specific",
    "Quality Good - Local Override", "Quality Limit - Field/Not", "Quality Limit - Field/Low",
    "Quality Limit - Field/High", "Quality Limit - Field/Constant"], extensible=True)
SI_SCALE_CODE = v.Enum("siScaleCode", ["p", "n", "micro", "m", "c", "d", "k", "M", "G", "T", "none"],
                       token=False)
CURRENCY_DESCRIPTION = v.Enum("currency itemDescription", ["currency", "currencyPerKW", "currencyPerKWh"])
TEMPERATURE_UNITS = v.Enum("temperature itemUnits", ["celsius", "fahrenheit"])
POWER_REAL_UNITS = v.Enum("powerReal itemUnits", ["W", "J/s"])
# clm5ISO42173A:ISO3AlphaCurrencyCodeContentType, as listed in the 2.0b schema set (2010-04-07).
CURRENCY_CODE = v.Enum("ISO 4217 currency code", """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP
    BYR BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EEK EGP ERN
    ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GWP GYD HKD HNL HRK HTG HUF IDR ILS INR IQD IRR ISK
    JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LTL LVL LYD MAD MDL MGA MKD
    MMK MNT MOP MRO MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN
    PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLL SOS SRD STD SVC SYP SZL THB TJS TMT TND
    TOP TRY TTD TWD TZS UAH UGX USD USN USS UYI UYU UZS VEF VND VUV WST XAF XAG XAU XBA XBB XBC XBD
    XCD XDR XFU XOF XPD XPF XPT XTS XXX YER ZAR ZMK ZWL""".split())


def fixed(name: str, value: str) -> v.Enum:
    """An XSD ``fixed`` value (xs:string based): an enumeration of one."""
    return v.Enum(name, [value], token=False)


# ---------------------------------------------------------------- shared pieces

def _duration_prop(prefix: str, local: str, *, optional: bool = False) -> Field:
    """A DurationPropType element: ``<X><xcal:duration>value</xcal:duration></X>`` -> timedelta."""
    return f((q(prefix, local), q("xcal", "duration")), v.DURATION, optional=optional)


DTSTART = f((q("xcal", "dtstart"), q("xcal", "date-time")), v.DATE_TIME)
DURATION = _duration_prop("xcal", "duration")
UID = f((q("xcal", "uid"), q("xcal", "text")), v.STRING, optional=True)
REQUEST_ID = f(q("pyld", "requestID"), v.STRING)
VEN_ID = f(q("ei", "venID"), v.STRING)
OPT_VEN_ID = f(q("ei", "venID"), v.STRING, optional=True)
CREATED_DATE_TIME = f(q("ei", "createdDateTime"), v.DATE_TIME)

EI_RESPONSE = ctype(
    "ei:eiResponse",
    f(q("ei", "responseCode"), v.RESPONSE_CODE),
    f(q("ei", "responseDescription"), v.STRING, optional=True),
    REQUEST_ID,
)
RESPONSE = f(q("ei", "eiResponse"), EI_RESPONSE)

QUALIFIED_EVENT_ID = ctype(
    "ei:qualifiedEventID",
    f(q("ei", "eventID"), v.STRING),
    f(q("ei", "modificationNumber"), v.UNSIGNED_INT),
)

TRANSPORT_INTERFACE = ctype(
    "power:transportInterface",
    f(q("power", "pointOfReceipt"), v.STRING),
    f(q("power", "pointOfDelivery"), v.STRING),
)

# ei:EiTargetType: every member is a list; emix:serviceArea and power:serviceLocation (GML) are
# not supported (see the module docstring) and simply have no field here.
TARGET = ctype(
    "ei:EiTargetType",
    f((q("power", "aggregatedPnode"), q("power", "node")), v.STRING, many_at=0),
    f((q("power", "endDeviceAsset"), q("power", "mrid")), v.STRING, many_at=0),
    f((q("power", "meterAsset"), q("power", "mrid")), v.STRING, many_at=0),
    f((q("power", "pnode"), q("power", "node")), v.STRING, many_at=0),
    f((q("power", "serviceDeliveryPoint"), q("power", "node")), v.STRING, many_at=0),
    f(q("power", "transportInterface"), TRANSPORT_INTERFACE, many_at=0),
    f(q("ei", "groupID"), v.STRING, many_at=0),
    f(q("ei", "groupName"), v.STRING, many_at=0),
    f(q("ei", "resourceID"), v.STRING, many_at=0),
    f(q("ei", "venID"), v.STRING, many_at=0),
    f(q("ei", "partyID"), v.STRING, many_at=0),
)

# xcal:properties: the active period, report intervals and availability windows.
PROPERTIES = ctype(
    "xcal:properties",
    DTSTART,
    DURATION,
    f((q("xcal", "tolerance"), q("xcal", "tolerate"), q("xcal", "startafter")), v.DURATION,
      key="start_after", optional=True, inner_optional=True),
    _duration_prop("ei", "x-eiNotification", optional=True),
    _duration_prop("ei", "x-eiRampUp", optional=True),
    _duration_prop("ei", "x-eiRecovery", optional=True),
)
WS_CALENDAR_INTERVAL = ctype("xcal:WsCalendarIntervalType", Flatten(q("xcal", "properties"), PROPERTIES))

# ---------------------------------------------------------------- emix:itemBase

def _unit(prefix: str, description: v.ValueType[str], units: v.ValueType[str],
          *extra: Field) -> ComplexType:
    return ctype(
        "item base",
        f(q(prefix, "itemDescription"), description),
        f(q(prefix, "itemUnits"), units),
        *extra,
    )


SI_SCALE = f(q("scale", "siScaleCode"), SI_SCALE_CODE)
POWER_ATTRIBUTES = ctype(
    "power:powerAttributes",
    f(q("power", "hertz"), v.DECIMAL),
    f(q("power", "voltage"), v.DECIMAL),
    f(q("power", "ac"), v.BOOLEAN),
)
POWER_ATTRS = f(q("power", "powerAttributes"), POWER_ATTRIBUTES)
_CURRENCY = _unit("oadr", CURRENCY_DESCRIPTION, CURRENCY_CODE, SI_SCALE)

ITEM_BASE = Substitution("ITEMBASE", (
    (q("power", "voltage"), _unit("power", fixed("itemDescription", "Voltage"), fixed("itemUnits", "V"), SI_SCALE)),
    (q("power", "energyApparent"), _unit("power", fixed("itemDescription", "ApparentEnergy"), fixed("itemUnits", "VAh"), SI_SCALE)),
    (q("power", "energyReactive"), _unit("power", fixed("itemDescription", "ReactiveEnergy"), fixed("itemUnits", "VARh"), SI_SCALE)),
    (q("power", "energyReal"), _unit("power", fixed("itemDescription", "RealEnergy"), fixed("itemUnits", "Wh"), SI_SCALE)),
    (q("power", "powerApparent"), _unit("power", fixed("itemDescription", "ApparentPower"), fixed("itemUnits", "VA"), SI_SCALE, POWER_ATTRS)),
    (q("power", "powerReactive"), _unit("power", fixed("itemDescription", "ReactivePower"), fixed("itemUnits", "VAR"), SI_SCALE, POWER_ATTRS)),
    (q("power", "powerReal"), _unit("power", fixed("itemDescription", "RealPower"), POWER_REAL_UNITS, SI_SCALE, POWER_ATTRS)),
    (q("oadr", "current"), _unit("oadr", fixed("itemDescription", "Current"), fixed("itemUnits", "A"), SI_SCALE)),
    (q("oadr", "currency"), _CURRENCY),
    (q("oadr", "currencyPerKWh"), _CURRENCY),
    (q("oadr", "currencyPerKW"), _CURRENCY),
    (q("oadr", "currencyPerThm"), _CURRENCY),
    (q("oadr", "frequency"), _unit("oadr", fixed("itemDescription", "Frequency"), fixed("itemUnits", "Hz"), SI_SCALE)),
    (q("oadr", "Therm"), _unit("oadr", fixed("itemDescription", "Therm"), fixed("itemUnits", "thm"), SI_SCALE)),
    (q("oadr", "temperature"), _unit("oadr", fixed("itemDescription", "temperature"), TEMPERATURE_UNITS, SI_SCALE)),
    (q("oadr", "pulseCount"), _unit("oadr", fixed("itemDescription", "pulse count"), fixed("itemUnits", "count"),
                                    f(q("oadr", "pulseFactor"), v.FLOAT))),
    (q("oadr", "customUnit"), _unit("oadr", v.STRING, v.STRING, SI_SCALE)),
))
ITEM = f(q("emix", "itemBase"), ITEM_BASE, key="item_base", optional=True)

# ---------------------------------------------------------------- events

EVENT_INTERVAL = ctype(
    "ei:interval (event signal)",
    f((q("xcal", "dtstart"), q("xcal", "date-time")), v.DATE_TIME, optional=True),
    _duration_prop("xcal", "duration", optional=True),
    UID,
    f((q("ei", "signalPayload"), q("ei", "payloadFloat"), q("ei", "value")), v.FLOAT),
)
EVENT_INTERVALS = f((q("strm", "intervals"), q("ei", "interval")), EVENT_INTERVAL, many_at=1, min_items=1)
CURRENT_VALUE = f((q("ei", "currentValue"), q("ei", "payloadFloat"), q("ei", "value")), v.FLOAT, optional=True)

EVENT_SIGNAL = ctype(
    "ei:eiEventSignal",
    EVENT_INTERVALS,
    f(q("ei", "eiTarget"), TARGET, optional=True),
    f(q("ei", "signalName"), SIGNAL_NAME),
    f(q("ei", "signalType"), SIGNAL_TYPE),
    f(q("ei", "signalID"), v.STRING),
    ITEM,
    CURRENT_VALUE,
)
EVENT_BASELINE = ctype(
    "ei:eiEventBaseline",
    DTSTART,
    DURATION,
    EVENT_INTERVALS,
    f(q("ei", "baselineID"), v.STRING),
    f(q("ei", "resourceID"), v.STRING, many_at=0),
    f(q("ei", "baselineName"), v.STRING),
    ITEM,
)
EVENT_SIGNALS = ctype(
    "ei:eiEventSignals",
    f(q("ei", "eiEventSignal"), EVENT_SIGNAL, key="event_signals", many_at=0, min_items=1),
    f(q("ei", "eiEventBaseline"), EVENT_BASELINE, optional=True),
)
EVENT_DESCRIPTOR = ctype(
    "ei:eventDescriptor",
    f(q("ei", "eventID"), v.STRING),
    f(q("ei", "modificationNumber"), v.UNSIGNED_INT),
    f(q("ei", "modificationDateTime"), v.DATE_TIME, optional=True),
    f(q("ei", "modificationReason"), v.STRING, optional=True),
    f(q("ei", "priority"), v.UNSIGNED_INT, optional=True),
    f((q("ei", "eiMarketContext"), q("emix", "marketContext")), v.ANY_URI),
    CREATED_DATE_TIME,
    f(q("ei", "eventStatus"), EVENT_STATUS),
    f(q("ei", "testEvent"), v.STRING, optional=True),
    f(q("ei", "vtnComment"), v.STRING, optional=True),
)
ACTIVE_PERIOD = ctype(
    "ei:eiActivePeriod",
    Flatten(q("xcal", "properties"), PROPERTIES),
    Nil(q("xcal", "components")),
)
EI_EVENT = ctype(
    "ei:eiEvent",
    f(q("ei", "eventDescriptor"), EVENT_DESCRIPTOR),
    f(q("ei", "eiActivePeriod"), ACTIVE_PERIOD),
    Flatten(q("ei", "eiEventSignals"), EVENT_SIGNALS),
    f(q("ei", "eiTarget"), TARGET),
)
OADR_EVENT = ctype(
    "oadr:oadrEvent",
    Flatten(q("ei", "eiEvent"), EI_EVENT),
    f(q("oadr", "oadrResponseRequired"), RESPONSE_REQUIRED),
)
EVENT_RESPONSE = ctype(
    "ei:eventResponse",
    f(q("ei", "responseCode"), v.RESPONSE_CODE),
    f(q("ei", "responseDescription"), v.STRING, optional=True),
    REQUEST_ID,
    f(q("ei", "qualifiedEventID"), QUALIFIED_EVENT_ID),
    f(q("ei", "optType"), OPT_TYPE),
)

# ---------------------------------------------------------------- reports

LOAD_CONTROL_VALUE = ctype(
    "oadr:oadrLoadControlStateTypeType",
    f(q("oadr", "oadrMin"), v.FLOAT, optional=True),
    f(q("oadr", "oadrMax"), v.FLOAT, optional=True),
    f(q("oadr", "oadrCurrent"), v.FLOAT),
    f(q("oadr", "oadrNormal"), v.FLOAT, optional=True),
)
LOAD_CONTROL_STATE = ctype(
    "oadr:oadrLoadControlState",
    f(q("oadr", "oadrCapacity"), LOAD_CONTROL_VALUE, optional=True),
    f(q("oadr", "oadrLevelOffset"), LOAD_CONTROL_VALUE, optional=True),
    f(q("oadr", "oadrPercentOffset"), LOAD_CONTROL_VALUE, optional=True),
    f(q("oadr", "oadrSetPoint"), LOAD_CONTROL_VALUE, optional=True),
)
RESOURCE_STATUS = ctype(
    "oadr:oadrPayloadResourceStatus",
    f(q("oadr", "oadrOnline"), v.BOOLEAN),
    f(q("oadr", "oadrManualOverride"), v.BOOLEAN),
    f(q("oadr", "oadrLoadControlState"), LOAD_CONTROL_STATE, optional=True),
)
REPORT_PAYLOAD = ctype(
    "oadr:oadrReportPayload",
    f(q("ei", "rID"), v.STRING),
    f(q("ei", "confidence"), v.CONFIDENCE, optional=True),
    f(q("ei", "accuracy"), v.FLOAT, optional=True),
    Choice((
        f((q("ei", "payloadFloat"), q("ei", "value")), v.FLOAT, key="value"),
        f(q("oadr", "oadrPayloadResourceStatus"), RESOURCE_STATUS, key="resource_status"),
    )),
    f(q("oadr", "oadrDataQuality"), DATA_QUALITY, optional=True),
)
REPORT_INTERVAL = ctype(
    "ei:interval (report)",
    f((q("xcal", "dtstart"), q("xcal", "date-time")), v.DATE_TIME, optional=True),
    _duration_prop("xcal", "duration", optional=True),
    UID,
    f(q("oadr", "oadrReportPayload"), REPORT_PAYLOAD, many_at=0, min_items=1),
)
SAMPLING_RATE = ctype(
    "oadr:oadrSamplingRate",
    f(q("oadr", "oadrMinPeriod"), v.DURATION),
    f(q("oadr", "oadrMaxPeriod"), v.DURATION),
    f(q("oadr", "oadrOnChange"), v.BOOLEAN),
)
REPORT_DESCRIPTION = ctype(
    "oadr:oadrReportDescription",
    f(q("ei", "rID"), v.STRING),
    f(q("ei", "reportSubject"), TARGET, optional=True),
    f(q("ei", "reportDataSource"), TARGET, optional=True),
    f(q("ei", "reportType"), REPORT_TYPE),
    ITEM,
    f(q("ei", "readingType"), READING_TYPE),
    f(q("emix", "marketContext"), v.ANY_URI, optional=True),
    f(q("oadr", "oadrSamplingRate"), SAMPLING_RATE, optional=True),
)
REPORT = ctype(
    "oadr:oadrReport",
    f((q("xcal", "dtstart"), q("xcal", "date-time")), v.DATE_TIME, optional=True),
    _duration_prop("xcal", "duration", optional=True),
    f((q("strm", "intervals"), q("ei", "interval")), REPORT_INTERVAL, optional=True, many_at=1, min_items=1),
    f(q("ei", "eiReportID"), v.STRING, optional=True),
    f(q("oadr", "oadrReportDescription"), REPORT_DESCRIPTION, many_at=0),
    f(q("ei", "reportRequestID"), v.STRING),
    f(q("ei", "reportSpecifierID"), v.STRING),
    f(q("ei", "reportName"), REPORT_NAME, optional=True),
    CREATED_DATE_TIME,
)
SPECIFIER_PAYLOAD = ctype(
    "ei:specifierPayload",
    f(q("ei", "rID"), v.STRING),
    ITEM,
    f(q("ei", "readingType"), READING_TYPE),
)
REPORT_SPECIFIER = ctype(
    "ei:reportSpecifier",
    f(q("ei", "reportSpecifierID"), v.STRING),
    _duration_prop("xcal", "granularity"),
    _duration_prop("ei", "reportBackDuration"),
    f(q("ei", "reportInterval"), WS_CALENDAR_INTERVAL, optional=True),
    f(q("ei", "specifierPayload"), SPECIFIER_PAYLOAD, many_at=0, min_items=1),
)
REPORT_REQUEST = ctype(
    "oadr:oadrReportRequest",
    f(q("ei", "reportRequestID"), v.STRING),
    f(q("ei", "reportSpecifier"), REPORT_SPECIFIER),
)
REPORTS = f(q("oadr", "oadrReport"), REPORT, many_at=0)
PENDING_REPORTS = f((q("oadr", "oadrPendingReports"), q("ei", "reportRequestID")), v.STRING, many_at=1)

CANCEL_REPORT = ctype(
    "oadrCancelReport",
    REQUEST_ID,
    f(q("ei", "reportRequestID"), v.STRING, many_at=0, min_items=1),
    f(q("pyld", "reportToFollow"), v.BOOLEAN),
    OPT_VEN_ID,
)

# ---------------------------------------------------------------- registration

INFO = ctype("oadr:oadrInfo", f(q("oadr", "oadrKey"), v.STRING), f(q("oadr", "oadrValue"), v.STRING))
SERVICE = ctype(
    "oadr:oadrService",
    f(q("oadr", "oadrServiceName"), SERVICE_NAME),
    f(q("oadr", "oadrInfo"), INFO, many_at=0, min_items=1),
)
SERVICE_SPECIFIC_INFO = ctype(
    "oadr:oadrServiceSpecificInfo",
    f(q("oadr", "oadrService"), SERVICE, many_at=0),
)
EXTENSION = ctype(
    "oadr:oadrExtension",
    f(q("oadr", "oadrExtensionName"), v.STRING),
    f(q("oadr", "oadrInfo"), INFO, many_at=0),
)
PROFILE = ctype(
    "oadr:oadrProfile",
    f(q("oadr", "oadrProfileName"), PROFILE_NAME),
    f((q("oadr", "oadrTransports"), q("oadr", "oadrTransport"), q("oadr", "oadrTransportName")),
      TRANSPORT_NAME, many_at=1, min_items=1),
)

# ---------------------------------------------------------------- opt

VAVAILABILITY = ctype(
    "xcal:vavailability",
    f((q("xcal", "components"), q("xcal", "available")), WS_CALENDAR_INTERVAL, key="available", many_at=1),
)

# ---------------------------------------------------------------- the payloads

_PAYLOADS = {
    # EiRegisterParty
    "oadrQueryRegistration": ctype("oadrQueryRegistration", REQUEST_ID),
    "oadrCreatePartyRegistration": ctype(
        "oadrCreatePartyRegistration",
        REQUEST_ID,
        f(q("ei", "registrationID"), v.STRING, optional=True),
        OPT_VEN_ID,
        f(q("oadr", "oadrProfileName"), PROFILE_NAME),
        f(q("oadr", "oadrTransportName"), TRANSPORT_NAME),
        f(q("oadr", "oadrTransportAddress"), v.STRING, optional=True),
        f(q("oadr", "oadrReportOnly"), v.BOOLEAN),
        f(q("oadr", "oadrXmlSignature"), v.BOOLEAN),
        f(q("oadr", "oadrVenName"), v.STRING, optional=True),
        f(q("oadr", "oadrHttpPullModel"), v.BOOLEAN, optional=True),
    ),
    "oadrCreatedPartyRegistration": ctype(
        "oadrCreatedPartyRegistration",
        RESPONSE,
        f(q("ei", "registrationID"), v.STRING, optional=True),
        OPT_VEN_ID,
        f(q("ei", "vtnID"), v.STRING),
        f((q("oadr", "oadrProfiles"), q("oadr", "oadrProfile")), PROFILE, many_at=1, min_items=1),
        _duration_prop("oadr", "oadrRequestedOadrPollFreq", optional=True),
        f(q("oadr", "oadrServiceSpecificInfo"), SERVICE_SPECIFIC_INFO, optional=True),
        f((q("oadr", "oadrExtensions"), q("oadr", "oadrExtension")), EXTENSION, optional=True, many_at=1),
    ),
    "oadrCancelPartyRegistration": ctype(
        "oadrCancelPartyRegistration", REQUEST_ID, f(q("ei", "registrationID"), v.STRING), OPT_VEN_ID),
    "oadrCanceledPartyRegistration": ctype(
        "oadrCanceledPartyRegistration", RESPONSE,
        f(q("ei", "registrationID"), v.STRING, optional=True), OPT_VEN_ID),
    "oadrRequestReregistration": ctype("oadrRequestReregistration", VEN_ID),
    "oadrResponse": ctype("oadrResponse", RESPONSE, OPT_VEN_ID),
    # OadrPoll
    "oadrPoll": ctype("oadrPoll", VEN_ID),
    # EiEvent
    "oadrRequestEvent": ctype(
        "oadrRequestEvent",
        Flatten(q("pyld", "eiRequestEvent"), ctype(
            "pyld:eiRequestEvent", REQUEST_ID, VEN_ID,
            f(q("pyld", "replyLimit"), v.UNSIGNED_INT, optional=True))),
    ),
    "oadrDistributeEvent": ctype(
        "oadrDistributeEvent",
        f(q("ei", "eiResponse"), EI_RESPONSE, optional=True),
        REQUEST_ID,
        f(q("ei", "vtnID"), v.STRING),
        f(q("oadr", "oadrEvent"), OADR_EVENT, many_at=0),
    ),
    "oadrCreatedEvent": ctype(
        "oadrCreatedEvent",
        Flatten(q("pyld", "eiCreatedEvent"), ctype(
            "pyld:eiCreatedEvent",
            RESPONSE,
            f((q("ei", "eventResponses"), q("ei", "eventResponse")), EVENT_RESPONSE,
              optional=True, many_at=1),
            VEN_ID)),
    ),
    # EiReport
    "oadrRegisterReport": ctype(
        "oadrRegisterReport", REQUEST_ID, REPORTS, OPT_VEN_ID,
        f(q("ei", "reportRequestID"), v.STRING, optional=True)),
    "oadrRegisteredReport": ctype(
        "oadrRegisteredReport", RESPONSE,
        f(q("oadr", "oadrReportRequest"), REPORT_REQUEST, many_at=0), OPT_VEN_ID),
    "oadrCreateReport": ctype(
        "oadrCreateReport", REQUEST_ID,
        f(q("oadr", "oadrReportRequest"), REPORT_REQUEST, many_at=0, min_items=1), OPT_VEN_ID),
    "oadrCreatedReport": ctype("oadrCreatedReport", RESPONSE, PENDING_REPORTS, OPT_VEN_ID),
    "oadrUpdateReport": ctype("oadrUpdateReport", REQUEST_ID, REPORTS, OPT_VEN_ID),
    "oadrUpdatedReport": ctype(
        "oadrUpdatedReport", RESPONSE,
        f(q("oadr", "oadrCancelReport"), CANCEL_REPORT, optional=True), OPT_VEN_ID),
    "oadrCancelReport": CANCEL_REPORT,
    "oadrCanceledReport": ctype("oadrCanceledReport", RESPONSE, PENDING_REPORTS, OPT_VEN_ID),
    # EiOpt
    "oadrCreateOpt": ctype(
        "oadrCreateOpt",
        f(q("ei", "optID"), v.STRING),
        f(q("ei", "optType"), OPT_TYPE),
        f(q("ei", "optReason"), OPT_REASON),
        f(q("emix", "marketContext"), v.ANY_URI, optional=True),
        VEN_ID,
        f(q("xcal", "vavailability"), VAVAILABILITY, optional=True),
        CREATED_DATE_TIME,
        REQUEST_ID,
        f(q("ei", "qualifiedEventID"), QUALIFIED_EVENT_ID, optional=True),
        f(q("ei", "eiTarget"), TARGET),
        f(q("oadr", "oadrDeviceClass"), TARGET, optional=True),
    ),
    "oadrCreatedOpt": ctype("oadrCreatedOpt", RESPONSE, f(q("ei", "optID"), v.STRING)),
    "oadrCancelOpt": ctype("oadrCancelOpt", REQUEST_ID, f(q("ei", "optID"), v.STRING), VEN_ID),
    "oadrCanceledOpt": ctype("oadrCanceledOpt", RESPONSE, f(q("ei", "optID"), v.STRING, optional=True)),
}

#: payload local name -> its complex type (read-only).
PAYLOAD_TYPES = MappingProxyType(_PAYLOADS)

#: Elements that are valid 2.0b but deliberately not supported (refused with a clear message).
UNSUPPORTED = frozenset({
    q("emix", "serviceArea"), q("power", "serviceLocation"), q("oadr", "oadrGBPayload"),
    q("oadr", "oadrGBDataDescription"), q("power", "energyItem"), q("power", "powerItem"),
})

#: Shared shapes that the documentation names instead of expanding them everywhere.
SHARED_SHAPES = (
    (TARGET, "TARGET"), (EI_RESPONSE, "RESPONSE"), (OADR_EVENT, "EVENT"), (REPORT, "REPORT"),
    (REPORT_REQUEST, "REPORT_REQUEST"), (LOAD_CONTROL_VALUE, "LOAD_CONTROL_VALUE"),
)
