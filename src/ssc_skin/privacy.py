"""Stable pseudonyms so that patient identifiers never leave in clear text."""

from __future__ import annotations

import hashlib
import hmac


def pseudonym(patient_id: str, key: str) -> str:
    """A keyed hash (HMAC-SHA256) of the identifier: stable for a key, not reversible."""
    digest = hmac.new(key.encode(), str(patient_id).encode(), hashlib.sha256).hexdigest()
    return f"pt-{digest[:10]}"
