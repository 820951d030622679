"""benchmarks/make_cdnow_task.py: the label boundaries, the per-customer stratified split, determinism.

The fast tests write a tiny CDNOW-format file in tmp_path; the slow one checks the real file when
../shared/data/cdnow is present (``pytest -m slow``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT.parent / "shared" / "data" / "cdnow" / "CDNOW_master.txt"


def _load_script() -> ModuleType:
    """The benchmark script as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("make_cdnow_task", ROOT / "benchmarks" / "make_cdnow_task.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


mct = _load_script()

# customer -> (YYYYMMDD dates, expected label or None when the customer is no entity)
EDGES = {
    "00001": (["19970105", "19971001"], 1),  # a purchase on the cut day is in the label window
    "00002": (["19970105", "19970930"], 0),  # the day before the cut is a feature, not a label
    "00003": (["19970220", "19980630"], 1),  # the last day of the window counts
    "00004": (["19970301", "19980701"], 0),  # after the window: ignored
    "00005": (["19971015"], None),  # nothing before the cut: no entity
    "00006": (["19970110", "19970110", "19970801"], 0),  # same-day rows stay two events
}


def _write_cdnow(path: Path, n_extra: int = 200) -> dict[str, int]:
    """EDGES plus ``n_extra`` customers, every third one returning; the file mimics the real layout."""
    lines = [" customer_id  date number_of_cds  dollar_value"]
    expected = {}
    for cid, (dates, label) in EDGES.items():
        lines += [f" {cid} {d}  1   11.77" for d in dates]
        if label is not None:
            expected[cid] = label
    for i in range(n_extra):
        cid = f"{100 + i:05d}"
        lines.append(f" {cid} 199702{1 + i % 28:02d}  2   20.50")
        if i % 3 == 0:
            lines.append(f" {cid} 19980115  1   9.99")
        expected[cid] = int(i % 3 == 0)
    path.write_text("\n".join(lines) + "\n")
    return expected


def test_labels_and_feature_rows_respect_the_cut(tmp_path: Path) -> None:
    src = tmp_path / "CDNOW_master.txt"
    expected = _write_cdnow(src)
    out = tmp_path / "task"
    task = mct.build_task(src, out)

    labels = pd.read_csv(out / "labels.csv", dtype={"customer_id": str})
    assert dict(zip(labels["customer_id"], labels["label"], strict=True)) == expected
    events = pd.concat(pd.read_csv(out / f"events_{s}.csv", dtype={"customer_id": str}) for s in mct.SPLITS)
    assert list(events.columns) == ["customer_id", "date", "number_of_cds", "dollar_value"]
    assert (events["date"] < "1997-10-01").all()
    assert events["date"].str.fullmatch(r"\d{4}-\d{2}-\d{2}").all()
    assert "00005" not in set(events["customer_id"])
    assert sorted(events.loc[events["customer_id"] == "00002", "date"]) == ["1997-01-05", "1997-09-30"]
    assert (events["customer_id"] == "00006").sum() == 3
    assert task["counts"]["customers"] == len(expected)
    assert task["counts"]["feature_events"] == len(events)
    assert task["counts"]["customers_by_feature_rows"]["1"] == 203  # 200 extra + 00001, 00003, 00004


def test_split_is_per_customer_stratified_and_deterministic(tmp_path: Path) -> None:
    src = tmp_path / "CDNOW_master.txt"
    _write_cdnow(src)
    a, b = tmp_path / "a", tmp_path / "b"
    mct.build_task(src, a)
    mct.build_task(src, b)
    for name in ("labels.csv", "split.csv", *(f"events_{s}.csv" for s in mct.SPLITS)):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name

    labels = pd.read_csv(a / "labels.csv", dtype={"customer_id": str})
    split = pd.read_csv(a / "split.csv", dtype={"customer_id": str})
    ids = {s: set(pd.read_csv(a / f"events_{s}.csv", dtype={"customer_id": str})["customer_id"]) for s in mct.SPLITS}
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])
    assert ids["train"] | ids["val"] | ids["test"] == set(labels["customer_id"])
    for s in mct.SPLITS:
        assert ids[s] == set(split.loc[split["split"] == s, "customer_id"])

    merged = labels.merge(split, on="customer_id")
    for label, group in merged.groupby("label"):
        n = len(group)
        counts = group["split"].value_counts()
        for s, frac in zip(mct.SPLITS, mct.FRACTIONS, strict=True):
            assert abs(counts.get(s, 0) - frac * n) <= 1, (label, s, counts.to_dict())

    other = mct.split_customers(labels, seed=1)
    assert not other.equals(mct.split_customers(labels, seed=0))


def test_bad_header_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("id when n value\n00001 19970101 1 1.0\n")
    with pytest.raises(ValueError, match="expected"):
        mct.read_cdnow(bad)


@pytest.mark.slow
@pytest.mark.skipif(not REAL.is_file(), reason=f"{REAL} absent")
def test_real_cdnow_task(tmp_path: Path) -> None:
    task = mct.build_task(REAL, tmp_path)
    c = task["counts"]
    assert c["customers"] == c["customers_in_source"] == 23570
    assert c["source_rows"] == 69659
    assert 0.27 < c["positive_rate"] < 0.33
    assert sum(s["customers"] for s in c["splits"].values()) == 23570
    assert sum(s["events"] for s in c["splits"].values()) == c["feature_events"]
    for s in c["splits"].values():
        assert abs(s["positive_rate"] - c["positive_rate"]) < 0.005
