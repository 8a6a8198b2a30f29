"""BPJS Antrean web-service client: credentials, signing and decryption, reply classification."""

from shared.bpjs.client import BpjsClient, CallResult, ContentType, Service
from shared.bpjs.credentials import DEV_CREDENTIALS, BpjsCredentials
from shared.bpjs.crypto import (
    ResponseDecryptError,
    decrypt_response,
    encrypt_response,
    response_key,
    signature,
)
from shared.bpjs.outcome import (
    ALREADY_DONE_PATTERNS,
    AUTH_ERROR_PATTERNS,
    Outcome,
    OutcomeKind,
    classify,
    is_success,
)

__all__ = [
    "ALREADY_DONE_PATTERNS",
    "AUTH_ERROR_PATTERNS",
    "DEV_CREDENTIALS",
    "BpjsClient",
    "BpjsCredentials",
    "CallResult",
    "ContentType",
    "Outcome",
    "OutcomeKind",
    "ResponseDecryptError",
    "Service",
    "classify",
    "decrypt_response",
    "encrypt_response",
    "is_success",
    "response_key",
    "signature",
]
