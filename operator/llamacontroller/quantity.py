"""Kubernetes resource quantities (`500m`, `8Gi`, `1e3`), as a Pod's resources take them. Pure.

The LlamaModel's resources go into its Pod verbatim, so they are checked here (and by the CRD's
rules, with the API server's own quantity functions) before the operator writes any Pod: the API
server would refuse a Pod whose quantity it cannot read, whose request exceeds its limit, or whose
extended resource is fractional or requested without its limit.
"""

from __future__ import annotations

import re
from fractions import Fraction

# A non-negative quantity: a decimal number, then a binary (Ki..Ei) or decimal (n..E) suffix or an
# exponent. A subset of what the API server reads (no sign, exponents of at most three digits), so
# every value that passes here passes there. RE2-compatible: the CRD carries it as a pattern.
QUANTITY_PATTERN = r"^([0-9]+([.][0-9]*)?|[.][0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][-+]?[0-9]{1,3})?$"
QUANTITY_MAX_CHARS = 64

# The resources a llama-server container may ask for: the standard ones of a container, or an
# extended resource `<domain>/<name>` (nvidia.com/gpu) outside the kubernetes.io domains.
STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")
EXTENDED_RESOURCE_PATTERN = (
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*"  # the domain
    r"/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"  # the name
)
EXTENDED_DOMAIN_MAX = 244  # the API server checks `requests.<name>` as a qualified name: 253 - 9
EXTENDED_NAME_MAX = 63
INT64_MAX = 2**63 - 1

_SUFFIXES = {
    **{s: Fraction(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "": Fraction(1),
    **{s: Fraction(10) ** (3 * (i + 1)) for i, s in enumerate("kMGTPE")},
}


def parse_quantity(value: int | str) -> Fraction:
    """The exact value of a quantity; ValueError for anything else (a sign, a typo, a float)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{value!r} is no quantity")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative")
        return Fraction(value)
    found = re.fullmatch(QUANTITY_PATTERN, value)
    if found is None:
        raise ValueError(f"{value!r} is no quantity (such as 500m, 8Gi or 2)")
    number, suffix = found.group(1), found.group(3) or ""
    whole, _, fraction = number.partition(".")
    amount = Fraction(int(whole or "0")) + (Fraction(int(fraction), 10 ** len(fraction)) if fraction else 0)
    if suffix[:1] in ("e", "E"):
        return amount * Fraction(10) ** int(suffix[1:])
    return amount * _SUFFIXES[suffix]


def is_extended(name: str) -> bool:
    return "/" in name


def resource_name_problem(name: str) -> str | None:
    """Why a container cannot ask for a resource of this name, or None."""
    if name in STANDARD_RESOURCES:
        return None
    domain, _, short = name.partition("/")
    if (
        not re.fullmatch(EXTENDED_RESOURCE_PATTERN, name)
        or "kubernetes.io/" in name
        or len(domain) > EXTENDED_DOMAIN_MAX
        or len(short) > EXTENDED_NAME_MAX
    ):
        return (
            f"{name!r} is no resource a container can ask for: cpu, memory, ephemeral-storage, or an "
            "extended resource such as nvidia.com/gpu"
        )
    return None
