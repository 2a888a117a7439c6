"""Carrier providers: adapters that send SMS/MMS and take back delivery reports.

Everything outside this package imports from here; ``base`` has the interface
and the registry of kinds (``outbox``, ``http``), one module per kind.
"""

from __future__ import annotations

from .base import (
    DELIVERY_STATUSES,
    PROVIDER_KINDS,
    DeliveryReport,
    OutboundMessage,
    Provider,
    SendResult,
    authenticate_ingress,
    build_provider,
    default_provider_configs,
)

__all__ = [
    "DELIVERY_STATUSES",
    "PROVIDER_KINDS",
    "DeliveryReport",
    "OutboundMessage",
    "Provider",
    "SendResult",
    "authenticate_ingress",
    "build_provider",
    "default_provider_configs",
]
