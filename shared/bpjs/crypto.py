"""BPJS request signing and `response` decryption (HMAC-SHA256, AES-256-CBC, LZ-String)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

import lzstring
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


class ResponseDecryptError(ValueError):
    """The `response` member could not be decrypted, decompressed or parsed."""


def signature(cons_id: str, secret: str, timestamp: str | int) -> str:
    """X-signature: base64 (standard, padded) HMAC-SHA256 of "{cons_id}&{timestamp}"."""
    message = f"{cons_id}&{timestamp}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def response_key(cons_id: str, secret: str, timestamp: str | int) -> bytes:
    """AES-256 key: SHA-256 of cons_id + secret + the request's exact X-timestamp string."""
    return hashlib.sha256(f"{cons_id}{secret}{timestamp}".encode()).digest()


def decrypt_response(cons_id: str, secret: str, timestamp: str | int, response_b64: str) -> Any:
    """Decrypt a read call's `response`; a `{"list": [...]}` wrapper is unwrapped to the list."""
    key = response_key(cons_id, secret, timestamp)
    try:
        decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
        padded = decryptor.update(base64.b64decode(response_b64, validate=True))
        padded += decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        compressed = (unpadder.update(padded) + unpadder.finalize()).decode("ascii")
    except (binascii.Error, ValueError) as exc:
        raise ResponseDecryptError(f"cannot decrypt response: {exc}") from exc
    text = lz_decompress_uri(compressed)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ResponseDecryptError(f"decrypted response is not JSON: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("list"), list):
        return data["list"]
    return data


def encrypt_response(cons_id: str, secret: str, timestamp: str | int, payload: Any) -> str:
    """Inverse of `decrypt_response` (the simulator uses it): compact JSON, LZ, AES, base64."""
    key = response_key(cons_id, secret, timestamp)
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(lz_compress_uri(text).encode("ascii")) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode("ascii")


def lz_compress_uri(text: str) -> str:
    """LZ-String compressToEncodedURIComponent over UTF-16 code units, as the JS original does."""
    # py-lzstring works on Python code points and truncates those above U+FFFF to 16 bits;
    # splitting them into surrogate pairs first keeps emoji and rare CJK intact and JS-compatible.
    return str(lzstring.compress_to_encoded_uri_component(_to_utf16_units(text)))


def lz_decompress_uri(compressed: str) -> str:
    """LZ-String decompressFromEncodedURIComponent; surrogate pairs are joined back."""
    try:
        units = lzstring.decompress_from_encoded_uri_component(compressed)
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise ResponseDecryptError(f"cannot decompress response: {exc}") from exc
    if not isinstance(units, str):
        raise ResponseDecryptError("cannot decompress response: empty or corrupt LZ-String data")
    try:
        return units.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    except UnicodeDecodeError as exc:
        raise ResponseDecryptError(f"decompressed response is not text: {exc}") from exc


def _to_utf16_units(text: str) -> str:
    if text.isascii():
        return text
    raw = text.encode("utf-16-le", "surrogatepass")
    return "".join(chr(int.from_bytes(raw[i : i + 2], "little")) for i in range(0, len(raw), 2))
