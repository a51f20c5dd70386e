"""Checks on text people type, shared by every form and the API."""
import unicodedata

LINE_BREAKS = "\r\n\t"


def storable(value: str, multiline: bool = False) -> bool:
    """No control characters (PostgreSQL refuses NUL outright) and no lone surrogates (not
    encodable); line breaks and tabs only in text that may span lines. Other invisible characters
    (no-break spaces, joiners in emoji, direction marks) are ordinary text and pass."""
    allowed = LINE_BREAKS if multiline else ""
    return not any(unicodedata.category(c) in ("Cc", "Cs") and c not in allowed for c in value)
