"""Descriptive metadata from a DICOM dataset: dates, age, pseudonymous patient key."""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import os
import re
from typing import Any

__all__ = ["patient_key", "parse_dicom_date", "patient_age_years", "DEFAULT_SALT_ENV"]

#: Environment variable holding the site's secret salt for patient keys.
DEFAULT_SALT_ENV = "CALCIMEASURE_PATIENT_SALT"
_FALLBACK_SALT = "calcimeasure-public-default-salt"


def patient_key(patient_id: str | None, issuer: str | None = None, *, salt: str | None = None) -> str | None:
    """Pseudonymous key of a patient: a salted HMAC-SHA256 of the Patient ID.

    The same (Patient ID, Issuer of Patient ID, salt) always gives the same key,
    so images of one patient group together, but the ID cannot be read back.

    Parameters
    ----------
    patient_id : str or None
        (0010,0020) *Patient ID*.
    issuer : str or None
        (0010,0021) *Issuer of Patient ID*, part of the identity when present.
    salt : str, optional
        Secret salt. Defaults to the ``CALCIMEASURE_PATIENT_SALT`` environment
        variable, else a public default (which only protects against casual
        reading: a site should set its own secret, see docs/privacy.md).

    Returns
    -------
    str or None
        16 hexadecimal characters prefixed with ``"P"``, or ``None`` when the
        file has no Patient ID.
    """
    if patient_id is None or not str(patient_id).strip():
        return None
    if salt is None:
        salt = os.environ.get(DEFAULT_SALT_ENV) or _FALLBACK_SALT
    message = f"{str(patient_id).strip()}\x1f{(issuer or '').strip()}".encode("utf-8")
    digest = hmac.new(salt.encode("utf-8"), message, hashlib.sha256).hexdigest()
    return "P" + digest[:16]


def parse_dicom_date(value: Any) -> _dt.date | None:
    """Parse a DICOM DA value (``YYYYMMDD``; tolerates ``YYYY.MM.DD``) or return None."""
    if value is None:
        return None
    if isinstance(value, _dt.date):
        return value
    text = re.sub(r"[^0-9]", "", str(value))
    if len(text) < 8:
        return None
    try:
        return _dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None


_AGE_UNITS_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}


def patient_age_years(
    patient_age: Any, birth_date: _dt.date | None, study_date: _dt.date | None
) -> float | None:
    """Age in years at the study, from (0010,1010) *Patient's Age* (``nnnD/W/M/Y``)
    or, failing that, from *Patient's Birth Date* and the study date."""
    if patient_age:
        match = re.fullmatch(r"\s*(\d{1,3})\s*([DWMY])\s*", str(patient_age).upper())
        if match:
            return round(int(match.group(1)) * _AGE_UNITS_YEARS[match.group(2)], 3)
    if birth_date and study_date and study_date >= birth_date:
        return round((study_date - birth_date).days / 365.25, 3)
    return None
