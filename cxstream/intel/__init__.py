"""Pure online models: intent, churn, features, drift, snapshots, evaluation (no I/O).

See docs/INTEL.md.  Import the submodules directly, e.g.
``from cxstream.intel.intent import IntentModel``.
"""
