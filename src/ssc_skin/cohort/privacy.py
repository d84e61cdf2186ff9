"""Stable pseudonyms so that patient identifiers never leave in clear text."""

from __future__ import annotations

import hashlib
import hmac
import os
import re

import pandas as pd

PSEUDONYM_KEY_ENV = "SSC_SKIN_PSEUDONYM_KEY"
DEFAULT_PSEUDONYM_KEY = "ssc-skin-default-key"  # public: set your own secret in the env


def pseudonym(patient_id: str, key: str) -> str:
    """A keyed hash (HMAC-SHA256) of the identifier: stable for a key, not reversible."""
    digest = hmac.new(key.encode(), str(patient_id).encode(), hashlib.sha256).hexdigest()
    return f"pt-{digest[:10]}"


def pseudonym_key() -> str:
    """The secret key for pseudonyms, from the environment (a public default otherwise)."""
    return os.environ.get(PSEUDONYM_KEY_ENV, DEFAULT_PSEUDONYM_KEY)


def hide_patient_ids(texts: pd.Series, records: pd.DataFrame, key: str) -> pd.Series:
    """Replace every raw patient id inside file names and reasons by its pseudonym."""
    ids = sorted({str(p) for p in records["patient_id"].dropna() if str(p).strip()},
                 key=len, reverse=True)
    if not ids:
        return texts
    pattern = re.compile(r"(?<![A-Za-z0-9])(" + "|".join(map(re.escape, ids)) + r")(?![A-Za-z0-9])")
    return texts.astype(str).map(lambda t: pattern.sub(lambda m: pseudonym(m.group(1), key), t))


def pseudonymise_records(records: pd.DataFrame, key: str) -> pd.DataFrame:
    """`image` and `patient` pseudonyms for validated records, the same in training and
    prediction (same key: same patient pseudonym); no patient id gives no patient pseudonym."""
    image = records["relative_path"].map(lambda p: pseudonym(p, key).replace("pt-", "im-"))
    patient = records["patient_id"].map(lambda p: pseudonym(p, key) if isinstance(p, str)
                                        else None)
    return records.assign(image=image, patient=patient)
