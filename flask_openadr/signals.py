"""Blinker signals sent at the moments a VTN application may want to observe.

Every signal is sent with the Flask application as sender, so receivers can tell two apps apart.
Connect with ``signal.connect(receiver, app)`` to listen to one app only.
"""
from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: A VEN's message was decoded and is about to be handled.
#: Sent with ``ven_id`` (None before registration), ``payload_name`` and ``payload`` (the dict).
message_received = _signals.signal("openadr-message-received")

#: A reply is about to be returned to a VEN.
#: Sent with ``ven_id``, ``payload_name`` and ``payload`` (the dict that was encoded).
message_sent = _signals.signal("openadr-message-sent")

#: A VEN registered (or re-registered). Sent with ``ven_id``, ``registration_id`` and
#: ``reregistration`` (True when the VEN renewed its current registration).
registration_created = _signals.signal("openadr-registration-created")

#: A registration ended, cancelled by the VEN or acknowledged after the VTN cancelled it.
#: Sent with ``ven_id`` and ``registration_id``.
registration_cancelled = _signals.signal("openadr-registration-cancelled")

#: A VEN answered an event (oadrCreatedEvent), once per event response. Sent with ``ven_id``,
#: ``event_id``, ``modification_number`` and ``opt_type``.
event_response_received = _signals.signal("openadr-event-response-received")

#: An event was added, modified or cancelled through the VTN API. Sent with ``event_id`` and
#: ``modification_number``.
event_added = _signals.signal("openadr-event-added")
event_modified = _signals.signal("openadr-event-modified")
event_cancelled = _signals.signal("openadr-event-cancelled")

#: A VEN came online: it sent a message while offline, or for the first time since it
#: registered. Sent with ``ven_id`` and ``epoch`` (which names this transition), once per
#: transition across every process, after the ``on_ven_online`` handler (and again with it when
#: its callback is retried; see :doc:`liveness`).
ven_online = _signals.signal("openadr-ven-online")

#: A VEN went offline: it missed ``OPENADR_OFFLINE_AFTER_MISSED_POLLS`` poll intervals. Sent with
#: ``ven_id`` and ``epoch``, like :data:`ven_online`, by the sweep that won the transition.
ven_offline = _signals.signal("openadr-ven-offline")

# The names the services use with Context.emit, mapped to the signals above.
BY_NAME = {
    "message_received": message_received,
    "message_sent": message_sent,
    "registration_created": registration_created,
    "registration_cancelled": registration_cancelled,
    "event_response_received": event_response_received,
    "event_added": event_added,
    "event_modified": event_modified,
    "event_cancelled": event_cancelled,
    "ven_online": ven_online,
    "ven_offline": ven_offline,
}
