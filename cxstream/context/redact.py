"""Redaction of personal data in free text: emails, payment card numbers, phone numbers.

Applied before text reaches logs, the context (and so Redis) or dead-letter
metadata.  Card numbers are recognised by the Luhn check, phone numbers by
``phonenumbers``' matcher (valid numbers, or possible ones of 9 digits or more),
so ordinary numbers (amounts, short order ids) survive.
"""

from __future__ import annotations

import re

import phonenumbers

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
_MAYBE_PHONE = re.compile(r"\d[\d\s().-]{6,}\d")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card(m: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", m.group())
    return "[card]" if 13 <= len(digits) <= 19 and _luhn_ok(digits) else m.group()


def redact(text: str, region: str = "GB") -> str:
    """Text with emails, card numbers and phone numbers replaced by placeholders.

    >>> redact("mail me at Jane.Doe@example.com or call +44 20 7946 0958")
    'mail me at [email] or call [phone]'
    >>> redact("card 4111 1111 1111 1111, order 12345")
    'card [card], order 12345'
    """
    text = _EMAIL.sub("[email]", text)
    text = _CARD.sub(_card, text)
    if not _MAYBE_PHONE.search(text):
        return text
    out, last = [], 0
    for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.POSSIBLE):
        # Short digit runs (order ids, amounts) are "possible" numbers too: keep them unless valid.
        if sum(ch.isdigit() for ch in match.raw_string) < 9 and not phonenumbers.is_valid_number(match.number):
            continue
        out.append(text[last : match.start])
        out.append("[phone]")
        last = match.end
    out.append(text[last:])
    return "".join(out)
