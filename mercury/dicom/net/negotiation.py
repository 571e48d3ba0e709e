"""Association negotiation as acceptor: the policy half of A-ASSOCIATE (PS3.8 9.3.2-9.3.3).

Kept apart from the state machine so the rules (which context gets which transfer syntax,
when to reject) can be read and tested on their own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from . import pdu
from .dimse import VERIFICATION_SOP_CLASS
from .model import AssociationRequest, PresentationContext, Rejection

logger = logging.getLogger(__name__)

APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"
UNCOMPRESSED = frozenset({IMPLICIT_VR_LE, EXPLICIT_VR_LE, EXPLICIT_VR_BE})

# A UUID-derived root (PS3.5 B.2) so mercury needs no registered organisation root.
MERCURY_IMPLEMENTATION_CLASS_UID = "2.25.185390002523104915647935662504350564958"
MERCURY_IMPLEMENTATION_VERSION_NAME = "MERCURY_010"


@dataclass(frozen=True)
class AcceptorPolicy:
    accept_abstract_syntax: Callable[[str], bool]
    transfer_syntaxes: frozenset[str]
    max_pdu: int
    implementation_class_uid: str
    implementation_version_name: str


def check_request(rq: pdu.AssociateRQ) -> Rejection | None:
    """The checks the standard makes before any user policy is consulted."""
    if not rq.protocol_version & 1:
        return Rejection.protocol_version_not_supported()
    if rq.application_context != APPLICATION_CONTEXT_NAME:
        return Rejection.application_context_not_supported()
    return None


def association_request(rq: pdu.AssociateRQ, host: str, port: int) -> AssociationRequest:
    info = rq.user_information
    return AssociationRequest(
        calling_ae=rq.calling_ae,
        called_ae=rq.called_ae,
        peer_host=host,
        peer_port=port,
        peer_max_pdu=info.maximum_length or 0,
        implementation_class_uid=info.implementation_class_uid,
        implementation_version_name=info.implementation_version_name,
        proposed=tuple(
            (cx.context_id, cx.abstract_syntax, cx.transfer_syntaxes)
            for cx in rq.presentation_contexts
        ),
    )


def _abstract_syntax_allowed(policy: AcceptorPolicy, uid: str) -> bool:
    try:
        return bool(policy.accept_abstract_syntax(uid))
    except Exception:
        logger.exception("accept_abstract_syntax(%r) raised; treating it as not supported", uid)
        return False


def negotiate_contexts(
    proposed: tuple[pdu.PresentationContextRQ, ...], policy: AcceptorPolicy
) -> tuple[tuple[pdu.PresentationContextAC, ...], dict[int, PresentationContext]]:
    """Answer each proposed context; the sender's TS order wins so files arrive unchanged."""
    answers: list[pdu.PresentationContextAC] = []
    accepted: dict[int, PresentationContext] = {}
    seen: set[int] = set()
    for cx in proposed:
        first_ts = cx.transfer_syntaxes[0] if cx.transfer_syntaxes else ""
        if cx.context_id % 2 == 0 or cx.context_id in seen or not cx.abstract_syntax:
            # Even or duplicate IDs are invalid (PS3.8 9.3.2.2); refusing only that context
            # keeps the rest of the association usable.
            answers.append(
                pdu.PresentationContextAC(cx.context_id, pdu.CONTEXT_NO_REASON, first_ts)
            )
            continue
        seen.add(cx.context_id)
        if cx.abstract_syntax == VERIFICATION_SOP_CLASS:
            acceptable = UNCOMPRESSED
        elif _abstract_syntax_allowed(policy, cx.abstract_syntax):
            acceptable = policy.transfer_syntaxes
        else:
            answers.append(
                pdu.PresentationContextAC(
                    cx.context_id, pdu.CONTEXT_ABSTRACT_SYNTAX_NOT_SUPPORTED, first_ts
                )
            )
            continue
        chosen = next((ts for ts in cx.transfer_syntaxes if ts in acceptable), None)
        if chosen is None:
            answers.append(
                pdu.PresentationContextAC(
                    cx.context_id, pdu.CONTEXT_TRANSFER_SYNTAXES_NOT_SUPPORTED, first_ts
                )
            )
            continue
        answers.append(pdu.PresentationContextAC(cx.context_id, pdu.CONTEXT_ACCEPTED, chosen))
        accepted[cx.context_id] = PresentationContext(cx.context_id, cx.abstract_syntax, chosen)
    return tuple(answers), accepted


def associate_ac(
    rq: pdu.AssociateRQ,
    answers: tuple[pdu.PresentationContextAC, ...],
    policy: AcceptorPolicy,
) -> pdu.AssociateAC:
    return pdu.AssociateAC(
        called_ae_field=rq.called_ae_field,
        calling_ae_field=rq.calling_ae_field,
        application_context=APPLICATION_CONTEXT_NAME,
        presentation_contexts=answers,
        user_information=pdu.UserInformation(
            maximum_length=policy.max_pdu,
            implementation_class_uid=policy.implementation_class_uid,
            implementation_version_name=policy.implementation_version_name,
        ),
    )
