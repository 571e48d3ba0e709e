"""mercury's own DICOM receive path: asyncio C-STORE / C-ECHO SCP (PS3.7, PS3.8).

pynetdicom polls with millisecond sleeps per message, which caps a receiver well below
what the disk can take; this package is the small, fast acceptor mercury receives with.
Sending and query/retrieve stay on pynetdicom.
"""

from .model import (
    Association,
    AssociationRequest,
    CloseReason,
    PresentationContext,
    Rejection,
    ServiceHandler,
    StoreRequest,
    StoreResult,
)
from .negotiation import MERCURY_IMPLEMENTATION_CLASS_UID, MERCURY_IMPLEMENTATION_VERSION_NAME
from .server import DicomServer

__all__ = [
    "MERCURY_IMPLEMENTATION_CLASS_UID",
    "MERCURY_IMPLEMENTATION_VERSION_NAME",
    "Association",
    "AssociationRequest",
    "CloseReason",
    "DicomServer",
    "PresentationContext",
    "Rejection",
    "ServiceHandler",
    "StoreRequest",
    "StoreResult",
]
