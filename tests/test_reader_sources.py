"""Reading .vital files at the native rate, the three case sources, and each bad input."""

import gzip

import numpy as np
import pytest
import vitaldb

from conftest import clean_case, write_case
from vitalssl.data.config import DataConfig
from vitalssl.data.reader import CaseError, read_case
from vitalssl.data.sources import LocalSource, case_set_ids, make_source

TRACKS = dict(ppg_track="SNUADC/PLETH", ecg_track="SNUADC/ECG_II",
              label_tracks={"hr": "Solar8000/HR", "spo2": "Solar8000/PLETH_SPO2"}, native_srate=500.0)


def test_read_case_returns_native_samples_exactly(tmp_path):
    ppg, ecg = clean_case(30)
    write_case(tmp_path / "5.vital", 5, ppg, ecg, 30)
    sig = read_case(tmp_path / "5.vital", 5, **TRACKS)
    assert sig.srate == 500.0 and len(sig.ppg) == len(sig.ecg) == 15000
    np.testing.assert_allclose(sig.ppg, ppg.astype(np.float32), rtol=0, atol=0)
    np.testing.assert_allclose(sig.ecg, ecg.astype(np.float32), rtol=0, atol=0)
    assert np.nanmean(sig.labels["hr"]) == 72.0 and np.nanmean(sig.labels["spo2"]) == 98.0


def test_gaps_come_back_as_nan(tmp_path):
    ppg, ecg = clean_case(30)
    ppg[5000:6000] = np.nan
    write_case(tmp_path / "6.vital", 6, ppg, ecg, 30)
    sig = read_case(tmp_path / "6.vital", 6, **TRACKS)
    assert np.isnan(sig.ppg[5000:6000]).all() and np.isfinite(sig.ppg[:5000]).all()
    assert np.isfinite(sig.ecg).all()


@pytest.mark.parametrize("bad,reason", [
    ("missing_ppg", "missing_track"), ("all_nan", "all_nan"), ("wrong_srate", "wrong_srate"),
    ("corrupt", "unreadable"), ("truncated", "truncated"), ("absent", "unknown_case"),
])
def test_bad_inputs_raise_case_error_with_reason(tmp_path, bad, reason):
    path = tmp_path / "9.vital"
    ppg, ecg = clean_case(30)
    if bad == "missing_ppg":
        write_case(path, 9, None, ecg, 30)
    elif bad == "all_nan":
        write_case(path, 9, np.full_like(ppg, np.nan), ecg, 30)
        # an all-NaN waveform has no records at all: add one NaN-only record so the track exists
        vf = vitaldb.VitalFile(str(path))
        vf.add_track("SNUADC/PLETH", [{"dt": vf.dtstart, "val": np.full(100, np.nan, np.float32)}], srate=500)
        vf.to_vital(str(path))
    elif bad == "wrong_srate":
        write_case(path, 9, ppg[::2], ecg[::2], 30, srate=250.0)
    elif bad == "corrupt":
        path.write_bytes(b"this is not a vital file" * 100)
    elif bad == "truncated":
        write_case(path, 9, ppg, ecg, 30)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CaseError) as e:
        read_case(path, 9, **TRACKS)
    assert e.value.reason == reason and e.value.caseid == 9 and "case 9" in str(e.value)


def test_corrupt_gzip_payload_is_unreadable(tmp_path):
    path = tmp_path / "3.vital"
    path.write_bytes(gzip.compress(b"VITA" + b"\x00" * 6))  # a whole header, then no packet
    with pytest.raises(CaseError) as e:
        read_case(path, 3, **TRACKS)
    assert e.value.reason == "unreadable"


def _data_cfg(tmp_path, source, **kw):
    d = dict(source=source, local_dir=str(tmp_path / "local"), clinical_csv=None,
             cache_dir=str(tmp_path / "cache"), download_retries=0, demo_dir=str(tmp_path / "demo"),
             api_url="http://127.0.0.1:9", download_workers=1, connect_timeout_s=1.0, read_timeout_s=1.0,
             retry_backoff_s=0.0)
    d.update(kw)
    return DataConfig(**d)


def test_local_source_lists_cases_and_subjects(tmp_path):
    (tmp_path / "local").mkdir()
    for c in (1, 2, 7):
        write_case(tmp_path / "local" / f"{c}.vital", c, *clean_case(20), 20)
    (tmp_path / "local" / "notes.vital").write_text("ignored: not a case id")
    csvp = tmp_path / "clinical.csv"
    csvp.write_text("caseid,subjectid,age\n1,100,50\n2,100,51\n7,200,60\n")
    src = make_source(_data_cfg(tmp_path, "local", clinical_csv=str(csvp)))
    assert isinstance(src, LocalSource) and src.name == "local"
    assert src.available() == [1, 2, 7]
    assert src.subjects() == {1: "100", 2: "100", 7: "200"}
    assert src.case_path(7) == tmp_path / "local" / "7.vital"


def test_local_source_missing_dir_names_param(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.local_dir"):
        make_source(_data_cfg(tmp_path, "local"))


def test_unknown_case_set_is_refused():
    with pytest.raises(ValueError, match="splits.case_set"):
        case_set_ids("nosuchset")
    assert case_set_ids("all") is None and len(case_set_ids("bis")) == 5523


def test_tracks_are_found_by_the_end_of_their_name_as_vitaldb_does(tmp_path):
    ppg, ecg = clean_case(30)
    write_case(tmp_path / "5.vital", 5, ppg, ecg, 30)
    sig = read_case(tmp_path / "5.vital", 5, ppg_track="PLETH", ecg_track="ECG_II", label_tracks={"hr": "HR"},
                    native_srate=500.0)
    np.testing.assert_array_equal(sig.ppg, ppg.astype(np.float32))
    assert np.nanmean(sig.labels["hr"]) == 72.0


def test_a_missing_track_names_every_track_the_file_has(tmp_path):
    ppg, ecg = clean_case(30)
    write_case(tmp_path / "5.vital", 5, ppg, ecg, 30)
    with pytest.raises(CaseError) as e:
        read_case(tmp_path / "5.vital", 5, **{**TRACKS, "ecg_track": "Intellivue/ECG_V5"})
    assert e.value.reason == "missing_track"
    for name in ("SNUADC/ECG_II", "SNUADC/PLETH", "Solar8000/HR", "windows.ecg_track"):
        assert name in e.value.detail


@pytest.mark.parametrize("over,param", [({"ppg_track": "Solar8000/HR"}, "windows.ppg_track"),
                                        ({"label_tracks": {"hr": "SNUADC/ECG_II"}}, "windows.label_tracks.hr")])
def test_a_track_of_the_wrong_type_is_named(tmp_path, over, param):
    ppg, ecg = clean_case(30)
    write_case(tmp_path / "5.vital", 5, ppg, ecg, 30)
    with pytest.raises(CaseError) as e:
        read_case(tmp_path / "5.vital", 5, **{**TRACKS, **over})
    assert e.value.reason == "wrong_track_type" and param in e.value.detail and "track, not a" in e.value.detail


def _case_with_later_records(path, after_s: float, waves: dict) -> None:
    """A clean 60-s case (clean_case(60)) with one more 500 Hz record per track in ``waves``, ``after_s`` after its
    start; the file ends with the last of them."""
    ppg, ecg = clean_case(60)
    write_case(path, 5, ppg, ecg, 60)
    vf = vitaldb.VitalFile(str(path))
    later = vf.dtstart + after_s
    for name, x in waves.items():
        vf.add_track(name, [{"dt": later, "val": x}], srate=500)
    vf.dtend = later + max(len(x) for x in waves.values()) / 500
    vf.to_vital(str(path))


def test_a_record_time_far_off_fails_the_case_before_allocating_the_span(tmp_path):
    """One ECG record stamped 30 days late would lay 1.3 G samples out; the case fails, naming the span."""
    path = tmp_path / "5.vital"
    _case_with_later_records(path, 30 * 86400.0, {"SNUADC/ECG_II": np.zeros(500, np.float32)})
    with pytest.raises(CaseError) as e:
        read_case(path, 5, **TRACKS)
    assert e.value.reason == "bad_time_span" and "720.0 h" in e.value.detail


def test_a_long_recording_with_a_pause_is_read(tmp_path):
    """30 h from first to last record with a 16-h pause in the middle is a recording, not a wrong time."""
    ppg, ecg = clean_case(60)
    path = tmp_path / "5.vital"
    _case_with_later_records(path, 16 * 3600.0, {"SNUADC/PLETH": ppg.astype(np.float32),
                                                 "SNUADC/ECG_II": ecg.astype(np.float32)})
    sig = read_case(path, 5, **TRACKS)
    assert len(sig.ppg) == int((16 * 3600 + 60) * 500) and np.isfinite(sig.ppg[-30000:]).all()


def test_a_short_track_name_prefers_the_track_named_exactly_so(tmp_path):
    """``HR`` ends both Solar8000/HR and Solar8000/PLETH_HR: it takes the first. With a second device's HR too,
    ``HR`` names two tracks exactly and is refused."""
    ppg, ecg = clean_case(30)
    path = tmp_path / "5.vital"
    write_case(path, 5, ppg, ecg, 30)
    vf = vitaldb.VitalFile(str(path))
    vf.add_track("Solar8000/PLETH_HR", [{"dt": vf.dtstart + t, "val": 99.0} for t in range(30)])
    vf.to_vital(str(path))
    sig = read_case(path, 5, **{**TRACKS, "label_tracks": {"hr": "HR"}})
    assert np.nanmean(sig.labels["hr"]) == 72.0
    vf.add_track("Intellivue/HR", [{"dt": vf.dtstart + t, "val": 70.0} for t in range(30)])
    vf.to_vital(str(path))
    with pytest.raises(CaseError) as e:
        read_case(path, 5, **{**TRACKS, "label_tracks": {"hr": "HR"}})
    assert e.value.reason == "ambiguous_track" and "Intellivue/HR" in e.value.detail and "label_tracks.hr" in e.value.detail
