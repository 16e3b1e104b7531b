"""Licence families: the free-text licence a crawler stored, reduced to the family a publisher decides on.

Wikimedia gives ``LicenseShortName`` ("CC BY-SA 4.0", "Public domain", "CC0", "GFDL"), other sources a URL or
nothing. Versions and ports ("4.0", "3.0 de") do not change what a user may do with a face crop, so a family is
the licence without them; what cannot be read is ``other``, and no licence at all (imports, search engines that
do not say) is ``unknown``, its own family, so filtering never guesses in the permissive direction. Pure.
"""

from __future__ import annotations

import re

from facecurate.workspace import setting

FAMILIES: tuple[str, ...] = setting("export", "licenses").items  # the table lists them once, for --license too

# Creative Commons elements in the order their names put them, spelled as the short names or the long ones.
_ELEMENTS = (("nc", r"nc|noncommercial|non-commercial"), ("sa", r"sa|sharealike|share-alike|share alike"),
             ("nd", r"nd|noderivs|noderivatives|no-derivs|no-derivatives|no derivatives"))
_CC_SHORT = re.compile(r"\bcc[\s_-]*by((?:[\s_-]*(?:nc|sa|nd)\b)*)")
_CC_URL = re.compile(r"creativecommons\.org/licenses/(by(?:-(?:nc|sa|nd))*)")
_CC_LONG = re.compile(r"(?:creative\s*commons\s*)?attribution((?:[\s,_-]*(?:non-?commercial|share-?\s?alike|"
                      r"no-?\s?deriv(?:s|atives)))*)")


def license_family(text: str | None) -> str:
    """The family of one stored licence string (see the module docstring)."""
    s = re.sub(r"\s+", " ", (text or "").strip().lower())
    if not s:
        return "unknown"
    if re.search(r"\bcc[\s_-]*0\b|\bcc[\s_-]*zero\b|publicdomain/zero", s):
        return "cc0"
    for pattern in (_CC_URL, _CC_SHORT):
        m = pattern.search(s)
        if m:
            return _cc(m.group(1))
    m = _CC_LONG.search(s)
    if m and ("creative" in s or m.group(1)):  # bare "Attribution" is Wikimedia's own template: not CC
        return _cc(m.group(1))
    if re.search(r"public[\s_-]*domain|publicdomain/mark|^pd\b|\bpd[\s_-]", s):
        return "pd"
    if "gfdl" in s or "gnu free documentation" in s:
        return "gfdl"
    return "other"


def _cc(elements: str) -> str:
    found = [name for name, words in _ELEMENTS if re.search(rf"(?:^|[\s,_-])(?:{words})(?:$|[\s,_-])", elements)]
    return "-".join(["cc-by", *found])


def parse_families(text: str) -> tuple[str, ...]:
    """``cc0, PD,cc-by`` → ("cc0", "pd", "cc-by"); empty means every family (no filter). The settings table has
    already checked each word is a family."""
    return tuple(dict.fromkeys(w.strip().lower() for w in text.split(",") if w.strip()))
