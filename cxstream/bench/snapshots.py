"""Model snapshots in the layouts engines wrote before: what the snapshot benchmark and the restore tests load.

:func:`dense_layout` writes an intent model's snapshot as it was written before December 6, 2026
(the touched rows' weights as dense ``(rows, classes)`` blocks, no ``*_gaps`` arrays): the cost a
worker paid before (``bench/intel/snapshot_load.py``) and the layout every restore must still read
(``tests/unit/intel/test_intent.py``).
"""

from __future__ import annotations

from cxstream.intel.intent import IntentModel
from cxstream.intel.snapshot import dump_snapshot


def dense_layout(model: IntentModel) -> bytes:
    """*model*'s snapshot with its weights as dense blocks, as written before December 6, 2026.

    >>> from cxstream.intel.snapshot import load_snapshot
    >>> m = IntentModel(n_features=1 << 10); m.learn_one("where is my card", "card_arrival")
    >>> sorted(a for a in load_snapshot(dense_layout(m)).arrays if a in ("w", "u", "nb", "wu_gaps", "nb_gaps"))
    ['nb', 'u', 'w']
    """
    kind, version, meta, arrays = model.snapshot_parts()
    rows, k = arrays["rows"], len(model.labels)
    for name in ("wu_gaps", "nb_gaps"):
        arrays.pop(name, None)
    arrays.update(w=model._w[rows, :k], u=model._u[rows, :k], nb=model._nb[rows, :k])
    return dump_snapshot(kind, version, meta, arrays)
