"""The desk's suggested knowledge (cxstream.serve.assist) without a server: the words used, the why, the cache."""

from __future__ import annotations

import redis.asyncio as aioredis

from cxstream.intel.assist import KnowledgeModel
from cxstream.serve.assist import AssistModels, contact_words, suggestions


def _model() -> KnowledgeModel:
    m = KnowledgeModel(n_features=1 << 14)
    m.learn_one("my parcel never arrived", "kb-lost-parcel", intent="delivery")
    m.learn_one("parcel lost in transit, never arrived", "kb-lost-parcel", intent="delivery", resolved=False)
    m.learn_one("how do I close my account", "kb-close", intent="account")
    return m


def test_contact_words_take_only_this_contacts_inbound_messages_and_its_intent() -> None:
    ctx = {
        "recent": [  # newest first, as the context keeps them
            {"contact_id": "k1", "kind": "message", "direction": "inbound", "text": "it was due monday"},
            {"contact_id": "k1", "kind": "message", "direction": "outbound", "text": "let me check"},
            {"contact_id": "k1", "kind": "page_view", "direction": "inbound", "text": "not a message"},
            {"contact_id": "k0", "kind": "message", "direction": "inbound", "text": "an older contact"},
            {"contact_id": "k1", "kind": "contact_opened", "direction": "inbound", "text": "my parcel never arrived"},
        ],
        "intent_history": [{"intent": "delivery", "contact_id": "k1"}],
    }
    assert contact_words(ctx, "k1") == ("my parcel never arrived it was due monday", "delivery")
    assert contact_words({}, "k1") == ("", None)


def test_suggestions_say_why() -> None:
    top = suggestions(_model(), "the parcel never arrived", "delivery")[0]
    assert top["document"] == "kb-lost-parcel"
    assert (top["uses"], top["resolved"], top["resolution_rate"], top["similar_contacts"]) == (2, 1, 0.5, 2)
    assert top["why"][0].startswith("used on 2 of the 3 most similar past contacts")
    assert "matching words: arrived, never, parcel" in top["why"]  # as specific as each other (same IDF): alphabetical
    assert top["matching_words"] == ["arrived", "never", "parcel"]
    assert "same intent: delivery" in top["why"] and "resolved 1 of 2 contacts it was used on" in top["why"]
    assert suggestions(_model(), "parcel", "account")[0]["why"][-2].startswith("matching words")  # no intent line: not the same intent


def test_rankings_are_remembered_per_version_intent_and_text() -> None:
    models = AssistModels(aioredis.Redis())  # never connected: suggest() does no I/O
    m = _model()
    first, cached = models.suggest(m, 3, "parcel never arrived", None)
    assert not cached and first[0]["document"] == "kb-lost-parcel"
    assert models.suggest(m, 3, "parcel never arrived", None) == (first, True)
    assert models.suggest(m, 4, "parcel never arrived", None)[1] is False  # a newer model ranks again
    assert models.suggest(m, 4, "parcel never arrived", "delivery")[1] is False
