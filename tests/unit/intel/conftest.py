"""Small synthetic fixtures for the intel unit tests (no external datasets)."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

TEMPLATES: dict[str, list[str]] = {
    "card_arrival": ["where is my {x} card", "my {x} card has not arrived yet", "still waiting for the {x} card"],
    "close_account": [
        "please close my {x} account",
        "i want to shut down my {x} account",
        "delete the {x} account now",
    ],
    "refund": ["i need a refund for the {x} order", "money back for {x} purchase please", "refund my {x} payment"],
    "password_reset": ["forgot my {x} password", "reset the {x} password", "cannot log in, {x} password wrong"],
}
FILLERS = ["new", "old", "blue", "visa", "joint", "savings", "online", "spare", "metal", "virtual"]


def make_rows(n: int, seed: int, labels: list[str] | None = None) -> list[tuple[str, str]]:
    """``n`` (text, label) rows drawn from the templates above, deterministically."""
    rng = random.Random(seed)
    names = labels or sorted(TEMPLATES)
    rows = []
    for _ in range(n):
        label = rng.choice(names)
        text = rng.choice(TEMPLATES[label]).format(x=rng.choice(FILLERS))
        rows.append((text, label))
    return rows


def churn_rows(n: int, seed: int) -> list[tuple[dict[str, float | str], bool]]:
    """Synthetic churn stream: month-to-month + complaints + failed payments raise risk."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        contract = rng.choice(["month_to_month", "one_year", "two_year"])
        complaints = rng.choice([0.0, 0.0, 1.0, 2.0])
        failed = rng.choice([0.0, 0.0, 0.0, 1.0])
        tenure = rng.uniform(0, 6)
        z = -2.0 + 2.0 * (contract == "month_to_month") + 1.0 * complaints + 1.5 * failed - 0.4 * tenure
        churned = rng.random() < 1.0 / (1.0 + 2.718281828 ** (-z))
        feats: dict[str, float | str] = {
            "contract": contract,
            "complaints_log": complaints,
            "failed_payments_log": failed,
            "tenure_years": tenure,
        }
        out.append((feats, churned))
    return out


@pytest.fixture
def make_intent_rows() -> Callable[..., list[tuple[str, str]]]:
    """The :func:`make_rows` generator (fixtures keep the test folder import-free)."""
    return make_rows


@pytest.fixture
def make_churn_rows() -> Callable[[int, int], list[tuple[dict[str, float | str], bool]]]:
    """The :func:`churn_rows` generator."""
    return churn_rows
