"""mercury's own DICOM upper layer (PS3.7, PS3.8): an asyncio C-STORE / C-ECHO SCP, and a
blocking C-STORE / C-ECHO SCU (:mod:`.client`).

pynetdicom polls with millisecond sleeps per message and hands every message between
threads, which caps a receiver well below what the disk can take and costs a sender
milliseconds per instance; this package is the small, fast acceptor mercury receives with
and the requestor it sends with. Storage commitment and query/retrieve stay on pynetdicom.
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
