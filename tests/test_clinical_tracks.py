"""Clinical columns into the split file and window metadata; cases chosen by their tracks
(the API's track table over a real HTTP server on 127.0.0.1, and the files' own track packets)."""

import gzip
import http.server
import json
import math
import threading
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from conftest import clean_case
from vitalssl.data.clinical import CLINICAL_COLUMNS, fetch_table, filter_by_tracks, parse_clinical_columns
from vitalssl.data.config import DataConfig
from vitalssl.data.demo import write_vital
from vitalssl.data.sources import LocalSource
from vitalssl.data.vitalfile import VitalFileError, list_tracks, read_vital
from vitalssl.data.windows import META_COLUMNS
from vitalssl.entry.data_stages import run_build_windows, run_prepare_splits

PPG, ECG = "SNUADC/PLETH", "SNUADC/ECG_II"
FULL_HEADER = "caseid,subjectid,casestart,caseend,age,sex,height,weight,bmi,asa,emop,department,optype,ane_type," \
              "icu_days,death_inhosp\n"


def _scfg(**kw):
    from vitalssl.data.config import SplitConfig
    d = dict(mode="full", case_set="all", fasttrack_cases=3, train=0.5, val=0.25, test=0.25, seed=1)
    d.update(kw)
    return SplitConfig(**d)


def _data(tmp_path, source, **kw):
    d = dict(source=source, local_dir=str(tmp_path / "local"), clinical_csv=None, cache_dir=str(tmp_path / "cache"),
             download_retries=2, api_url="https://api.vitaldb.net", demo_dir=str(tmp_path / "demo"),
             download_workers=1, connect_timeout_s=1.0, read_timeout_s=1.0, retry_backoff_s=0.0)
    d.update(kw)
    return DataConfig(**d)


def test_clinical_columns_are_typed_and_missing_is_nan():
    text = FULL_HEADER + ("1,S-01,0,3600,63,M,170.5,70,24.2,2,0,General surgery,Colorectal,General,0,0\n"
                          "2,S-02,0,3600,,F,,,,3,1,\"Thoracic, surgery\",Lung,Spinal,3,1\n"
                          "3,S-03,0,3600,0.3,,,,,,,,,,,\n")
    cols, values = parse_clinical_columns("cases.csv", text)
    assert cols == list(CLINICAL_COLUMNS)
    assert values[1] == {"age": 63.0, "sex": "M", "height": 170.5, "weight": 70.0, "bmi": 24.2, "asa": 2.0,
                         "emop": 0.0, "department": "General surgery", "optype": "Colorectal", "ane_type": "General",
                         "icu_days": 0.0, "death_inhosp": 0.0}
    assert math.isnan(values[2]["age"]) and values[2]["department"] == "Thoracic, surgery" and values[2]["asa"] == 3.0
    assert values[3]["age"] == 0.3 and values[3]["sex"] is None and math.isnan(values[3]["icu_days"])
    # the demo's table today: only age and sex of the clinical columns
    cols, values = parse_clinical_columns("demo.csv", "caseid,subjectid,age,sex,casestart,caseend\n4,7,55,F,0,100\n")
    assert cols == ["age", "sex"] and values[4] == {"age": 55.0, "sex": "F"}
    with pytest.raises(ValueError, match=r"line 2, column asa: 'III' is not a number"):
        parse_clinical_columns("c.csv", "caseid,subjectid,asa\n1,1,III\n")
    with pytest.raises(ValueError, match="case 1 is listed with different clinical values on lines 2 and 3"):
        parse_clinical_columns("c.csv", "caseid,subjectid,age\n1,1,50\n1,1,51\n")


def _local_cases(tmp_path, lacking: dict):
    """Cases 1-6 of 60 s in ``local``; ``lacking`` maps a case to the waveform it lacks."""
    d = tmp_path / "local"
    d.mkdir()
    for c in range(1, 7):
        ppg, ecg = clean_case(60, seed=c)
        write_vital(d / f"{c}.vital", c, None if lacking.get(c) == "ppg" else ppg,
                    None if lacking.get(c) == "ecg" else ecg, None, 60)
    return d


def test_local_split_carries_clinical_columns_into_meta(tmp_path):
    _local_cases(tmp_path, {5: "ppg", 6: "ecg"})
    rows = {1: "S-01,0,60,63,M,170,70,24.2,2,0,General surgery,Colorectal,General,0,0",
            2: "S-02,0,60,,F,,,,3,1,\"Thoracic, surgery\",Lung,General,3,1",
            3: "S-03,0,60,41,F,160,55,21.5,1,0,Urology,Others,General,0,0",
            4: "S-04,0,60,77,M,165,60,22.0,4,1,General surgery,Vascular,General,12,1"}
    (tmp_path / "cases.csv").write_text(FULL_HEADER + "".join(f"{c},{r}\n" for c, r in rows.items()))
    data = _data(tmp_path, "local", clinical_csv=str(tmp_path / "cases.csv"))
    doc = run_prepare_splits(data, _scfg(), tmp_path / "splits.json", (PPG, ECG))
    tf = doc["provenance"]["track_filter"]
    assert tf["dropped_missing_track"] == {PPG: 1, ECG: 1} and tf["dropped_cases"] == [5, 6]
    assert tf["cases_checked"] == 6 and tf["cases_kept"] == 4
    saved = json.loads((tmp_path / "splits.json").read_text())
    assert saved["clinical"]["columns"] == list(CLINICAL_COLUMNS)
    assert saved["clinical"]["cases"]["2"]["age"] is None and saved["clinical"]["cases"]["4"]["icu_days"] == 12.0
    from vitalssl.config import from_dict
    from vitalssl.data.config import WindowConfig
    from vitalssl.entry.params import load_params
    wcfg = replace(from_dict(WindowConfig, load_params()["windows"], "windows"), label_tracks={}, num_workers=1)
    metas = []
    for split in ("train", "val", "test"):
        run_build_windows(data, wcfg, tmp_path / "splits.json", split, tmp_path / "w", None, progress=False)
        metas.append(pd.read_csv(tmp_path / "w" / f"{split}_windows.meta.csv", dtype={"subjectid": str}))
    meta = pd.concat(metas)
    assert list(meta.columns) == META_COLUMNS + list(CLINICAL_COLUMNS)
    assert sorted(meta["caseid"].unique()) == [1, 2, 3, 4]
    by_case = meta.groupby("caseid").first()
    assert by_case.loc[1, "age"] == 63.0 and by_case.loc[4, "asa"] == 4.0 and by_case.loc[4, "icu_days"] == 12.0
    assert math.isnan(by_case.loc[2, "age"]) and by_case.loc[2, "department"] == "Thoracic, surgery"
    assert by_case.loc[3, "subjectid"] == "S-03" and by_case.loc[2, "sex"] == "F"
    for col, kind in CLINICAL_COLUMNS.items():
        assert (meta[col].dtype.kind in "fi") == (kind is float), col  # pandas reads whole numbers as int
    # every window of a case carries the same values
    assert (meta.groupby("caseid")["bmi"].nunique(dropna=False) == 1).all()


def test_demo_subset_table_leaves_the_other_columns_empty(tmp_path):
    _local_cases(tmp_path, {})
    (tmp_path / "c.csv").write_text("caseid,subjectid,age,sex,casestart,caseend\n"
                                    + "".join(f"{c},{c + 100},{40 + c},{'MF'[c % 2]},0,60\n" for c in range(1, 7)))
    data = _data(tmp_path, "local", clinical_csv=str(tmp_path / "c.csv"))
    doc = run_prepare_splits(data, _scfg(), tmp_path / "s.json", (PPG, ECG))
    assert doc["clinical"]["columns"] == ["age", "sex"] and doc["provenance"]["track_filter"]["cases_dropped"] == 0
    from vitalssl.config import from_dict
    from vitalssl.data.config import WindowConfig
    from vitalssl.entry.params import load_params
    wcfg = replace(from_dict(WindowConfig, load_params()["windows"], "windows"), label_tracks={}, num_workers=1)
    run_build_windows(data, wcfg, tmp_path / "s.json", "train", tmp_path / "w", None, progress=False)
    meta = pd.read_csv(tmp_path / "w" / "train_windows.meta.csv")
    assert ((meta["age"] - meta["caseid"]) == 40).all() and (meta["subjectid"] == meta["caseid"] + 100).all()
    assert meta["asa"].isna().all() and meta["optype"].isna().all() and meta["icu_days"].isna().all()


def test_header_only_track_list_agrees_with_the_full_reader(tmp_path):
    import vitaldb
    d = _local_cases(tmp_path, {2: "ppg", 3: "ecg"})
    vf = vitaldb.VitalFile()  # several devices, a numeric and a text track
    vf.dtstart, vf.dtend = 1.0e9, 1.0e9 + 10
    vf.add_track("SNUADC/PLETH", [{"dt": 1.0e9, "val": np.zeros(5000, np.float32)}], srate=500.0)
    vf.add_track("Solar8000/HR", [{"dt": 1.0e9 + i, "val": 70.0 + i} for i in range(10)])
    vf.add_track("EVENT", [{"dt": 1.0e9 + 1, "val": "start"}])
    vf.to_vital(str(d / "9.vital"))
    for p in sorted(d.glob("*.vital")):
        assert list_tracks(p) == list(read_vital(p, None).trks), p.name
    assert set(list_tracks(d / "2.vital")) == {ECG}
    assert set(list_tracks(d / "9.vital")) == {"SNUADC/PLETH", "Solar8000/HR", "EVENT"}
    cut = d / "1.vital"
    cut.write_bytes(cut.read_bytes()[:-100])
    with pytest.raises(VitalFileError):
        list_tracks(cut)
    assert LocalSource("local", d, None).track_lists([1, 2])[1] is None  # kept; build-windows names the failure


def test_filter_by_tracks_counts_each_missing_track():
    tracks = {1: {PPG, ECG}, 2: {ECG}, 3: {PPG}, 4: set(), 5: {"X/" + PPG.split("/")[1]}, 6: None}
    kept, r = filter_by_tracks([1, 2, 3, 4, 5, 6, 7], tracks, (PPG, ECG))
    assert kept == [1, 6] and r["dropped_cases"] == [2, 3, 4, 5, 7] and r["track_list_unreadable"] == [6]
    assert r["dropped_missing_track"] == {PPG: 4, ECG: 4} and r["cases_dropped"] == 5


class _Api(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` (path -> bytes); ``faults[path]`` is a list of faults spent one per request."""
    files: dict = {}
    faults: dict = {}
    hits: dict = {}

    def do_GET(self):
        type(self).hits[self.path] = type(self).hits.get(self.path, 0) + 1
        body = self.files.get(self.path)
        fault = self.faults.get(self.path, []).pop(0) if self.faults.get(self.path) else None
        if body is None or fault == 500:
            self.send_response(404 if body is None else 500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if fault == "cut" else body)
        if fault == "cut":
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def api():
    _Api.files, _Api.faults, _Api.hits = {}, {}, {}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Api
    server.shutdown()
    server.server_close()


def _tables():
    cases = FULL_HEADER + "".join(f"{c},{c},0,3600,{30 + c},{'MF'[c % 2]},,,,{1 + c % 4},0,GS,Other,General,"
                                  f"{c % 3},0\n" for c in range(1, 11))
    # 2 and 3 lack the PPG, 4 the ECG, 5 both; 6 is not in the track table
    lacks = {2: [PPG], 3: [PPG], 4: [ECG], 5: [PPG, ECG], 6: [PPG, ECG, "Solar8000/HR"]}
    trks = "caseid,tname,tid\n" + "".join(f"{c},{t},{c * 10 + i}\n" for c in range(1, 11) if c != 6
                                         for i, t in enumerate([PPG, ECG, "Solar8000/HR"]) if t not in lacks.get(c, []))
    return cases, trks


def test_vitaldb_prepare_splits_drops_cases_by_the_track_table(tmp_path, api):
    url, handler = api
    cases, trks = _tables()
    handler.files = {"/cases": cases.encode(), "/trks": gzip.compress(trks.encode())}
    handler.faults = {"/cases": [500], "/trks": ["cut"]}
    data = _data(tmp_path, "vitaldb", api_url=url + "/")
    doc = run_prepare_splits(data, _scfg(train=0.6, val=0.2, test=0.2), tmp_path / "s.json", (PPG, ECG))
    tf = doc["provenance"]["track_filter"]
    assert tf["dropped_cases"] == [2, 3, 4, 5, 6] and tf["dropped_missing_track"] == {PPG: 4, ECG: 3}
    assert sorted(doc["train"]["caseids"] + doc["val"]["caseids"] + doc["test"]["caseids"]) == [1, 7, 8, 9, 10]
    assert doc["clinical"]["cases"]["7"]["age"] == 37.0 and doc["clinical"]["cases"]["7"]["asa"] == 4.0
    assert handler.hits == {"/cases": 2, "/trks": 2}  # the 500 and the cut body were each retried once
    cache = tmp_path / "cache"
    assert (cache / "clinical.csv").read_text() == cases and (cache / "trks.csv").read_text() == trks
    assert sorted(p.name for p in cache.iterdir()) == ["clinical.csv", "trks.csv"]
    run_prepare_splits(data, _scfg(train=0.6, val=0.2, test=0.2), tmp_path / "s2.json", (PPG, ECG))
    assert handler.hits == {"/cases": 2, "/trks": 2}  # verified cache: nothing fetched again
    assert (tmp_path / "s.json").read_bytes() == (tmp_path / "s2.json").read_bytes()


def test_table_download_failures_are_named_and_never_cached(tmp_path, api):
    url, handler = api
    handler.files = {"/trks": b"caseid,tname,tid\n" + b"1,SNUADC/PLETH,1\n" * 50}
    handler.faults = {"/trks": ["cut", "cut", "cut"]}
    check = lambda text: None  # noqa: E731
    with pytest.raises(RuntimeError, match=r"/trks failed after 3 attempt\(s\): IncompleteRead"):
        fetch_table(url + "/trks", tmp_path / "trks.csv", check, retries=2, backoff_s=0.01)
    with pytest.raises(RuntimeError, match=r"/cases failed after 2 attempt\(s\): HTTP 404"):
        fetch_table(url + "/cases", tmp_path / "clinical.csv", check, retries=1, backoff_s=0.01)
    assert list(tmp_path.iterdir()) == []
    # a cached table that no longer reads is fetched again
    (tmp_path / "trks.csv").write_text("caseid,name\n1,x\n")
    from vitalssl.data.clinical import parse_track_table
    fetch_table(url + "/trks", tmp_path / "trks.csv", lambda t: parse_track_table("t", t), retries=0)
    assert parse_track_table("t", (tmp_path / "trks.csv").read_text()) == {1: {PPG}}
