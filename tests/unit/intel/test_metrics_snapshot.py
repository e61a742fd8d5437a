"""Metrics helpers, drift monitor, calibrator, snapshot container and text features."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cxstream.intel.calibration import OnlineCalibrator, pav
from cxstream.intel.drift import ErrorDriftMonitor
from cxstream.intel.metrics import (
    ProgressiveAccuracy,
    ProgressiveAUC,
    ProgressiveLogLoss,
    exact_auc,
    expected_calibration_error,
    macro_f1,
)
from cxstream.intel.snapshot import SnapshotError, dump_snapshot, load_snapshot
from cxstream.intel.text import hashed_features, tokenize


def test_histogram_auc_matches_exact() -> None:
    rng = np.random.default_rng(3)
    y = rng.random(4000) < 0.3
    p = np.clip(0.35 * y + rng.random(4000) * 0.65, 0, 1)
    hist = ProgressiveAUC()
    for yi, pi in zip(y, p, strict=False):
        hist.update(bool(yi), float(pi))
    exact = exact_auc(y.tolist(), p.tolist())
    assert 0.6 < exact < 0.99
    assert abs(hist.get() - exact) < 2e-3


def test_progressive_accuracy_and_log_loss() -> None:
    acc, ll = ProgressiveAccuracy(), ProgressiveLogLoss()
    assert acc.get() == 0.0 and ll.get() == 0.0
    for y, p in [(True, 0.9), (False, 0.2), (True, 0.4)]:
        acc.update(y, p >= 0.5)
        ll.update(y, p)
    assert acc.get() == pytest.approx(2 / 3)
    assert ll.get() == pytest.approx(-(np.log(0.9) + np.log(0.8) + np.log(0.4)) / 3)


def test_ece_and_f1() -> None:
    assert expected_calibration_error([0.75] * 4, [True, True, True, False]) == 0.0
    assert expected_calibration_error([1.0, 1.0], [False, False]) == 1.0
    assert macro_f1(["a", "b"], ["a", "b"]) == 1.0
    assert macro_f1(["a", "b"], ["unknown", "b"]) == 0.5


def test_pav_is_monotone() -> None:
    out = pav(np.array([0.9, 0.1, 0.5, 0.4, 0.95]), np.array([1.0, 3.0, 1.0, 1.0, 1.0]))
    assert np.all(np.diff(out) >= 0)
    assert out[0] == pytest.approx(0.3)


def test_calibrator_tracks_accuracy() -> None:
    cal = OnlineCalibrator(n_bins=10, decay=1.0)
    rng = np.random.default_rng(0)
    for _ in range(5000):
        cal.update(0.85, bool(rng.random() < 0.6))
    assert cal.calibrate(0.85) == pytest.approx(0.6, abs=0.05)
    restored = OnlineCalibrator(n_bins=10, decay=1.0)
    restored.load_state(cal.state())
    assert restored.calibrate(0.85) == cal.calibrate(0.85)


def test_drift_monitor_flags_change() -> None:
    mon = ErrorDriftMonitor()
    rng = np.random.default_rng(1)
    flags = [mon.update(float(rng.random() < 0.05)) for _ in range(1000)]
    assert not any(flags)
    flags = [mon.update(float(rng.random() < 0.6)) for _ in range(1000)]
    assert any(flags)
    assert mon.error_rate > 0.3
    assert mon.clone().n_detections == 0


def test_snapshot_rejects_bad_input() -> None:
    with pytest.raises(SnapshotError):
        load_snapshot(b"nope")
    with pytest.raises(SnapshotError):
        dump_snapshot("k", 1, {}, {"o": np.array([object()], dtype=object)})
    blob = dump_snapshot("k", 1, {}, {"a": np.arange(4)})
    with pytest.raises(SnapshotError):
        load_snapshot(blob, kind="other")
    # an array blob that would need pickle is refused at load time
    buf = io.BytesIO()
    np.save(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    header = b'{"arrays":[["evil",%d]],"kind":"k","meta":{},"model_version":1}' % len(buf.getvalue())
    body = struct.pack("<I", len(header)) + header + buf.getvalue()
    with pytest.raises(SnapshotError):
        load_snapshot(b"CXSNAP\x01" + zlib.compress(body))
    with pytest.raises(SnapshotError):
        load_snapshot(blob[:-5])


def test_tokenize_normalises() -> None:
    assert tokenize("Ｃａｒｄ £20 isn't HERE") == ["card", "00", "isn't", "here"]


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200), st.sampled_from([1 << 8, 1 << 12, 1 << 16]))
def test_hashed_features_properties(text: str, dim: int) -> None:
    idx, val = hashed_features(text, dim)
    assert idx.shape == val.shape
    assert len(set(idx.tolist())) == idx.size
    if idx.size:
        assert idx.min() >= 0 and idx.max() < dim
        assert float(np.dot(val, val)) == pytest.approx(1.0, rel=1e-5)
    again_idx, again_val = hashed_features(text, dim)
    assert np.array_equal(idx, again_idx) and np.array_equal(val, again_val)
