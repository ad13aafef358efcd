"""The one-pass .vital reader: vitaldb's samples bit for bit, and every way a file is not whole."""

import gzip
import struct

import numpy as np
import pytest
import vitaldb

from conftest import clean_case, write_case
from vital_format import CMD, RAW, VitalBuilder
from vitalssl.data.reader import CaseError, read_case
from vitalssl.data.vitalfile import VitalFileError, read_vital

T0 = 1_600_000_000.0
TRACKS = dict(ppg_track="SNUADC/PLETH", ecg_track="SNUADC/ECG_II",
              label_tracks={"hr": "Solar8000/HR", "spo2": "Solar8000/PLETH_SPO2"}, native_srate=500.0)


# --------------------------------------------------------------------------- comparing with vitaldb

def _outcome(fn):
    try:
        return fn()
    except Exception as e:  # vitaldb raises plain ValueError/OverflowError on some record times; so must we
        return type(e)


def _assert_same(a, b, what):
    if isinstance(a, type) or isinstance(b, type) or a is None or isinstance(a, list):
        assert a == b, what
        return
    assert (a.dtype, a.shape) == (b.dtype, b.shape), what
    if a.dtype == object:
        assert [x if isinstance(x, str) else "nan" for x in a] == [x if isinstance(x, str) else "nan" for x in b], what
    else:
        assert a.tobytes() == b.tobytes(), what  # bit for bit, NaN payloads included


def assert_same_as_vitaldb(path, names):
    """Same span, same selected tracks in the same order, same samples for every query vitaldb answers."""
    ref = vitaldb.VitalFile(str(path), track_names=names)
    ours = read_vital(path, names)
    assert (ours.dtstart, ours.dtend) == (ref.dtstart, ref.dtend)
    assert list(ours.trks) == list(ref.trks)
    for name in sorted(set(names or []) | set(ref.trks) | {"NO/SUCH"}):
        trk = ref.find_track(name)
        intervals = {1.0, 0.5} | ({1 / trk.srate} if trk is not None and trk.type == 1 and trk.srate > 0 else set())
        for iv in sorted(intervals):
            _assert_same(_outcome(lambda: ref.get_track_samples(name, iv)),
                         _outcome(lambda: ours.get_track_samples(name, iv)), (name, iv))
    return ours


# --------------------------------------------------------------------------- files written by vitaldb (packed)

@pytest.fixture(scope="module")
def packed_case(tmp_path_factory):
    """A vitaldb-written (packed) case with gaps, numbers every 2 s and a scaled int16 wave."""
    path = tmp_path_factory.mktemp("packed") / "5.vital"
    ppg, ecg = clean_case(40)
    ppg[3000:4000] = np.nan
    ecg[15000:15500] = np.nan
    write_case(path, 5, ppg, ecg, 40)
    vf = vitaldb.VitalFile(str(path))
    trk = vf.add_track("SNUADC/ART", [{"dt": vf.dtstart + 1.5, "val": np.arange(-3000, 3000, dtype=np.int16)}],
                       srate=500)
    trk.fmt, trk.gain, trk.offset = 5, 0.01, 40.0
    vf.to_vital(str(path))
    return path


@pytest.mark.parametrize("names", [
    ["SNUADC/PLETH", "SNUADC/ECG_II", "Solar8000/HR", "Solar8000/PLETH_SPO2"],
    ["PLETH", "ECG_II", "HR", "ART"],             # selected by suffix only
    ["Solar8000/*", "SNUADC/ECG_II"],             # a whole device
    ["SNUADC/PLETH"],                             # vitaldb stops after this track's records
    None,                                         # every track
])
def test_packed_file_reads_as_vitaldb(packed_case, names):
    assert_same_as_vitaldb(packed_case, names)


@pytest.mark.parametrize("packed", [True, False])
@pytest.mark.parametrize("names", [["SNUADC/ECG_II", "Solar8000/HR"], ["SNUADC/PLETH"], ["Solar8000/BT"]])
def test_to_vital_files_read_as_vitaldb(tmp_path, packed, names):
    """Records grouped by track with their length in trkinfo: vitaldb seeks over unselected tracks and,
    in packed files, stops after the last selected one."""
    vf = vitaldb.VitalFile()
    vf.dtstart, vf.dtend, vf.dgmt = T0, T0 + 20, 0
    rng = np.random.default_rng(1)
    for name in ("SNUADC/PLETH", "SNUADC/ART", "SNUADC/ECG_II"):
        vf.add_track(name, [{"dt": T0 + k, "val": rng.normal(size=500).astype(np.float32)} for k in range(20)
                            if k != 7], srate=500)
    for name in ("Solar8000/HR", "Solar8000/BT", "Solar8000/RR"):
        vf.add_track(name, [{"dt": T0 + k + 0.3, "val": float(k)} for k in range(0, 20, 2)])
    vf.to_vital(str(tmp_path / "1.vital"), packed=packed)
    assert_same_as_vitaldb(tmp_path / "1.vital", names)


# --------------------------------------------------------------------------- files written as a recorder does

def recorder_file(path, seconds=60):
    """Interleaved 1-s records of four devices, as in VitalDB: gaps, scaled integer formats, a 62.5 Hz
    wave, text, numbers twice in a second, and records before the header's start and after the waves."""
    rng = np.random.default_rng(0)
    b = VitalBuilder(T0 + 5, T0 + seconds)
    b.device(1, "SNUADC").device(2, "Solar8000").device(3, "BIS").device(4, "Primus", port="COM4")
    b.track(1, "PLETH", srate=500, did=1)
    b.track(2, "ECG_II", fmt=5, srate=500, gain=0.005, offset=-1.0, did=1)
    b.track(3, "ART", srate=500, did=1)                                   # not selected
    b.track(4, "HR", ttype=2, did=2)
    b.track(5, "PLETH_SPO2", ttype=2, fmt=4, did=2)
    b.track(6, "ART_MBP", ttype=2, fmt=2, did=2)
    b.track(7, "BIS", ttype=2, fmt=3, did=3)
    b.track(8, "RR", ttype=2, did=2)                                      # not selected
    b.track(9, "CO2", fmt=6, srate=62.5, gain=0.1, offset=-5.0, did=4)
    b.track(10, "EVENT", ttype=5)
    b.number(8, T0 - 100, 14)  # an unselected track's record long before: does not move dtstart
    for k in range(seconds):
        t = T0 + 2 + k  # before the header's dtstart (T0 + 5) at first
        if not 30 <= k < 35:
            x = (40 + 10 * rng.standard_normal(500)).astype(np.float32)
            if k == 10:
                x[100:200] = np.nan
            b.wave(1, t, x)
        if not 50 <= k < 52:  # a gap, and records that overlap or leave a sample out
            b.wave(2, t + (0.0007 if k % 7 == 3 else -0.0011 if k % 7 == 5 else 0.0),
                   rng.integers(-2000, 2000, 500).astype(np.int16))
        b.wave(3, t, np.full(500, 1e30, np.float32))
        if k % 2 == 0:
            b.number(4, t + 0.4, 60 + k % 17).number(5, t + 0.4, 97 + k % 3, fmt=4)
            b.number(6, t + 0.9, 80.0 + k / 7, fmt=2).number(7, t + 1.1, -5 + k % 50, fmt=3).number(8, t, 12)
        if k == 20:
            b.number(4, t + 0.7, 150)  # a second value in the same second: the later wins
        b.wave(9, t, rng.integers(0, 500, 62 + k % 2).astype(np.uint16))
        if k in (3, 40):
            b.text(10, t + 0.2, f"event {k}")
    b.number(4, T0 + seconds + 3.5, 81)  # a number after the waves end: moves dtend
    return b.write(path)


RECORDER_NAMES = ["SNUADC/PLETH", "ECG_II", "Solar8000/HR", "Solar8000/PLETH_SPO2", "Solar8000/ART_MBP",
                  "BIS/BIS", "Primus/CO2", "EVENT"]


def test_recorder_file_reads_as_vitaldb(tmp_path):
    vf = assert_same_as_vitaldb(recorder_file(tmp_path / "1.vital"), RECORDER_NAMES)
    assert vf.dtstart == T0 + 2 and vf.dtend == T0 + 63.5  # moved by selected records only
    assert list(vf.trks) == ["SNUADC/PLETH", "SNUADC/ECG_II", "Solar8000/HR", "Solar8000/PLETH_SPO2",
                             "Solar8000/ART_MBP", "BIS/BIS", "Primus/CO2", "EVENT"]
    assert len(vf.trks["SNUADC/PLETH"].dt) == 55 and vf.trks["SNUADC/ECG_II"].val.dtype == np.int16


def test_read_case_reads_a_recorder_file_as_vitaldb(tmp_path):
    path = recorder_file(tmp_path / "1.vital")
    sig = read_case(path, 1, **TRACKS)
    ref = vitaldb.VitalFile(str(path), track_names=["SNUADC/PLETH", "SNUADC/ECG_II", "Solar8000/HR",
                                                     "Solar8000/PLETH_SPO2"])
    ppg, ecg = (ref.get_track_samples(n, 1 / 500) for n in ("SNUADC/PLETH", "SNUADC/ECG_II"))
    assert sig.ppg.dtype == sig.ecg.dtype == np.float32
    assert sig.ppg.tobytes() == ppg.tobytes() and sig.ecg.tobytes() == ecg.tobytes()
    np.testing.assert_array_equal(sig.labels["hr"], ref.get_track_samples("Solar8000/HR", 1.0).astype(np.float64))


# --------------------------------------------------------------------------- vitaldb's quirks, one file each

def _base(packed=False, dtstart=T0):
    b = VitalBuilder(dtstart, T0 + 10, packed=packed)
    b.device(1, "SNUADC").device(2, "Solar8000")
    b.track(1, "PLETH", srate=100, did=1).track(2, "HR", ttype=2, did=2).track(3, "EVENT", ttype=5)
    return b


def _records(b, ks, tid_wave=1, tid_num=2):
    for k in ks:
        b.wave(tid_wave, T0 + k, np.full(100, k, np.float32)).number(tid_num, T0 + k + 0.5, 60 + k)
    return b


def q_big_packet(packed):
    b = _records(_base(packed), range(3)).packet(3, b"\0" * 1_000_001)
    return _records(b, range(3, 6))  # not read unless the file is packed


def q_zero_length_packet():
    return _records(_records(_base(), range(3)).packet(4, b""), range(3, 6))


def q_unknown_packet_type():
    return _records(_records(_base(), range(3)).packet(3, b"x" * 40), range(3, 6))


def q_commands():
    b = _records(_base(), range(3)).text(3, T0 + 1, "a").text(3, T0 + 2, "b")
    b.packet(CMD, struct.pack("<BH3H", 5, 3, 3, 1, 2)).packet(CMD, b"\x06")  # display order; clear EVENT
    return _records(b.text(3, T0 + 4, "c"), range(3, 6))


def q_command_too_short():
    return _records(_records(_base(), range(3)).packet(CMD, struct.pack("<BH2H", 5, 3, 1, 2)), range(3, 6))


def q_raw_packets(first_short):
    short = struct.pack("<d", T0)  # no port, no length: vitaldb's locals are unset the first time
    whole = struct.pack("<d", T0) + struct.pack("<I", 4) + b"COM1" + b"\x01" + struct.pack("<I", 3) + b"abc"
    b = _records(_base(), range(2))
    for payload in ((short, whole) if first_short else (whole, short)):
        b.packet(RAW, payload)
    return _records(b, range(2, 5))


def q_track_redefined():
    b = _records(_base(), range(3)).track(7, "PLETH", srate=200, did=1)  # same name, new tid: earlier records go
    b.wave(7, T0 + 3, np.arange(200, dtype=np.float32))
    b.track(2, "RR", ttype=2, did=2)  # an old selected tid renamed to an unselected track still feeds HR
    return _records(b, range(4, 6))


def q_short_records():
    b = _records(_base(), range(2)).rec(1, T0 + 2, b"")  # rec of 12 bytes: no sample count
    b.packet(1, b"\x0a\x00" + b"\0" * 9)  # under 12 bytes
    b.rec(1, T0 + 3, struct.pack("<I", 500) + b"\0" * 40)  # claims more samples than it holds
    b.rec(1, T0 + 4, struct.pack("<I", 2) + np.ones(2, np.float32).tobytes(), infolen=14)  # longer info block
    b.rec(2, T0 + 4, b"\x01\x02")  # a number cut short
    return _records(b, range(5, 7))


def q_unknown_format():
    b = _records(_base(), range(2)).track(4, "ECG_II", fmt=9, srate=100, did=1)
    b.rec(4, T0 + 1, struct.pack("<I", 4) + b"\0" * 16)
    return _records(b, range(2, 4))


def q_trkinfo_without_gain():
    b = _base().track(4, "ECG_II", fmt=5, srate=100, did=1, cut=4 + 10 + 4 + 4 + 4 + 4 + 4)  # ends after srate
    b.wave(4, T0 + 1, np.arange(100, dtype=np.int16))  # gain and offset default to 0: all zeros
    return _records(b, range(3))


def q_trkinfo_cut_in_a_field():
    b = _records(_base(), range(2)).track(4, "ECG_II", fmt=5, srate=100, did=1, cut=4 + 10 + 4 + 4 + 4 + 4 + 4 + 3)
    return _records(b, range(2, 4))


def q_eight_byte_formats():
    b = _base().track(4, "ECG_II", fmt=7, srate=100, did=1).track(5, "BT", ttype=2, fmt=8, did=2)
    b.rec(4, T0 + 1, struct.pack("<I", 50) + np.arange(50).astype("l").tobytes())
    b.number(5, T0 + 1, 2**40 + 2**16 + 1, fmt=8)
    b.rec(5, T0 + 2, struct.pack("<I", 7))  # passes vitaldb's 4-byte check, too short for its 8-byte read
    return _records(b, range(2, 4))


def q_devices():
    b = VitalBuilder(T0, T0 + 10)
    b.device(1, "", devtype="Solar8000")  # no name: the type names it
    b.device(2, "Old").device(2, "SNUADC")  # the later wins
    b.device(3, "", devtype="")  # nothing names it: its tracks are "/name"
    b.track(1, "PLETH", srate=100, did=2).track(2, "HR", ttype=2, did=1).track(3, "ECG_II", srate=100, did=9)
    b.track(4, "ECG_II", srate=100, did=3)  # "/ECG_II", also selected by "ECG_II"
    for k in range(3):
        b.wave(3, T0 + k, np.full(100, k, np.float32)).wave(4, T0 + k, np.full(100, -k, np.float32))
    return _records(b, range(3))


def q_no_start_in_header():
    b = VitalBuilder(0.0, 0.0)
    b.device(1, "SNUADC").device(2, "Solar8000")
    b.track(1, "PLETH", srate=100, did=1).track(2, "HR", ttype=2, did=2).track(3, "EVENT", ttype=5)
    return _records(b, (5, 2, 3, 8))  # the first record sets dtstart, an earlier one lowers it


def q_packed_stop():
    b = VitalBuilder(T0, T0 + 10, packed=True).device(1, "SNUADC").device(2, "Solar8000")
    b.track(1, "PLETH", srate=100, did=1, reclen=421).track(2, "HR", ttype=2, did=2, reclen=21)
    b.track(3, "RR", ttype=2, did=2, reclen=21)
    return _records(b, range(3))  # vitaldb stops once the first two records' lengths are read


def q_records_at_time_zero_or_before():  # neither moves dtstart; both lie before it
    return _records(_base().wave(1, 0.0, np.ones(100, np.float32)).wave(1, -5.0, np.ones(9, np.float32)), range(3))


def q_record_time_nan():
    return _records(_base().number(2, float("nan"), 70).wave(1, float("nan"), np.ones(10, np.float32)), range(3))


QUIRKS = {"big packet": lambda: q_big_packet(False), "big packet, packed file": lambda: q_big_packet(True),
          "zero-length packet": q_zero_length_packet, "unknown packet type": q_unknown_packet_type,
          "commands": q_commands, "command too short": q_command_too_short,
          "raw packets": lambda: q_raw_packets(False), "raw packet without length first": lambda: q_raw_packets(True),
          "track redefined": q_track_redefined, "short records": q_short_records, "unknown format": q_unknown_format,
          "trkinfo without gain": q_trkinfo_without_gain, "trkinfo cut in a field": q_trkinfo_cut_in_a_field,
          "8-byte formats": q_eight_byte_formats, "devices": q_devices, "packed file stops": q_packed_stop, "no start in header": q_no_start_in_header,
          "records at time 0 or before": q_records_at_time_zero_or_before, "record time NaN": q_record_time_nan}


@pytest.mark.parametrize("quirk", QUIRKS)
def test_quirk_reads_as_vitaldb(tmp_path, quirk):
    path = QUIRKS[quirk]().write(tmp_path / "1.vital")
    assert_same_as_vitaldb(path, ["SNUADC/PLETH", "Solar8000/HR", "EVENT", "ECG_II", "Solar8000/BT"])


def test_quirks_do_what_their_names_say(tmp_path):
    """Guards the quirk table itself: each file reaches the branch it is named after."""
    def read(quirk):
        return read_vital(QUIRKS[quirk]().write(tmp_path / f"{quirk}.vital"), ["SNUADC/PLETH", "Solar8000/HR",
                                                                                "EVENT", "ECG_II", "Solar8000/BT"])
    assert len(read("big packet").trks["SNUADC/PLETH"].dt) == 3
    assert len(read("big packet, packed file").trks["SNUADC/PLETH"].dt) == 6
    assert len(read("zero-length packet").trks["Solar8000/HR"].dt) == 3
    assert len(read("unknown packet type").trks["Solar8000/HR"].dt) == 6
    assert read("commands").trks["EVENT"].val == ["c"]
    assert len(read("command too short").trks["Solar8000/HR"].dt) == 3
    assert len(read("raw packets").trks["Solar8000/HR"].dt) == 5
    assert len(read("raw packet without length first").trks["Solar8000/HR"].dt) == 2
    redefined = read("track redefined")
    assert redefined.trks["SNUADC/PLETH"].srate == 200 and len(redefined.trks["SNUADC/PLETH"].dt) == 3
    assert len(redefined.trks["Solar8000/HR"].dt) == 5
    assert read("short records").trks["SNUADC/PLETH"].n.tolist() == [100, 100, 2, 100, 100]
    assert "SNUADC/ECG_II" not in read("unknown format").trks
    assert read("trkinfo without gain").get_track_samples("ECG_II", 0.01)[100:200].tolist() == [0.0] * 100
    assert len(read("trkinfo cut in a field").trks["Solar8000/HR"].dt) == 2
    eight = read("8-byte formats")
    assert eight.trks["SNUADC/ECG_II"].val.itemsize == 8 and eight.trks["Solar8000/BT"].val.tolist() == [2**40 + 2**16 + 1]
    assert len(eight.trks["Solar8000/HR"].dt) == 0  # the short 8-byte read stopped the reading
    assert sorted(read("devices").trks) == ["/ECG_II", "ECG_II", "SNUADC/PLETH", "Solar8000/HR"]
    assert read("no start in header").dtstart == T0 + 2
    assert len(read("packed file stops").trks["SNUADC/PLETH"].dt) == 1
    with pytest.raises(ValueError):
        read("record time NaN").get_track_samples("SNUADC/PLETH", 0.01)


# --------------------------------------------------------------------------- files that are not whole

def _small_body():
    return _records(_base(), range(4)).body()


def test_a_body_cut_anywhere_but_between_packets_is_truncated(tmp_path):
    body, path = _small_body(), tmp_path / "1.vital"
    ends, pos = set(), 10 + 27
    while pos < len(body):
        ends.add(pos)
        pos += 5 + struct.unpack_from("<I", body, pos + 1)[0]
    for cut in range(len(body) + 1):  # inside the header, a packet head or a payload, or between packets
        path.write_bytes(gzip.compress(body[:cut]))
        if cut in ends or cut == len(body):
            read_vital(path, ["SNUADC/PLETH"])
            continue
        with pytest.raises(VitalFileError) as e:
            read_vital(path, ["SNUADC/PLETH"])
        assert e.value.reason == "truncated" and "cut short" in e.value.detail, cut


def test_framing_is_checked_past_where_vitaldb_stops_and_over_its_skips(tmp_path):
    path = tmp_path / "1.vital"
    b = _records(_base(), range(2)).packet(4, b"")  # vitaldb stops here
    path.write_bytes(gzip.compress(b.body() + b"\x01\x00\x01"))
    with pytest.raises(VitalFileError, match="truncated|cut short"):
        read_vital(path, ["SNUADC/PLETH"])
    b = VitalBuilder(T0, T0 + 10).track(1, "PLETH", srate=100).track(2, "HR", ttype=2, reclen=3 * 22)
    _records(b, range(3))  # interleaved: the skip lands inside a wave record
    body = b.body()
    path.write_bytes(gzip.compress(body))
    assert_same_as_vitaldb(path, ["PLETH"])
    path.write_bytes(gzip.compress(body[:-1]))
    with pytest.raises(VitalFileError, match="cut short"):
        read_vital(path, ["PLETH"])


@pytest.mark.parametrize("damage,reason,fragment", [
    ("empty", "unreadable", "is empty"),
    ("gzip cut", "truncated", "ends before its gzip stream does"),
    ("crc", "unreadable", "not a valid gzip stream"),
    ("not gzip", "unreadable", "not a valid gzip stream"),
    ("short, not gzip", "unreadable", "not a valid gzip stream"),
    ("gzip header cut", "truncated", "ends before its gzip stream does"),
    ("trailing garbage", "unreadable", "after its gzip stream"),
    ("not vital", "unreadable", "no VITA signature"),
    ("header too short", "unreadable", "too short to hold the time zone"),
    ("directory", "unreadable", "Is a directory"),
])
def test_damaged_file_raises_with_reason(tmp_path, damage, reason, fragment):
    path, gz = tmp_path / "1.vital", gzip.compress(_small_body())
    data = {"empty": b"", "gzip cut": gz[:-20], "crc": gz[:-8] + bytes([gz[-8] ^ 1]) + gz[-7:],
            "not gzip": b"this is not a vital file" * 10, "short, not gzip": b"garbage", "gzip header cut": gz[:7],
            "trailing garbage": gz + b"junk",
            "not vital": gzip.compress(b"VITB" + bytes(100)),
            "header too short": gzip.compress(b"VITA\3\0\0\0\1\0\0")}.get(damage)
    if damage == "directory":
        path.mkdir()
    else:
        path.write_bytes(data)
    with pytest.raises(VitalFileError) as e:
        read_vital(path, ["SNUADC/PLETH"])
    assert e.value.reason == reason and fragment in e.value.detail


def test_gzip_members_and_zero_padding_read_as_vitaldb(tmp_path):
    body, path = _small_body(), tmp_path / "1.vital"
    path.write_bytes(gzip.compress(body[:300]) + gzip.compress(body[300:]) + b"\0" * 8)
    assert_same_as_vitaldb(path, ["SNUADC/PLETH", "Solar8000/HR"])


def test_empty_file_is_unreadable_not_truncated(tmp_path):
    (tmp_path / "4.vital").write_bytes(b"")
    with pytest.raises(CaseError) as e:
        read_case(tmp_path / "4.vital", 4, **TRACKS)
    assert e.value.reason == "unreadable" and "4.vital is empty" in str(e.value)


def test_a_record_time_that_is_not_finite_makes_the_case_unreadable(tmp_path):
    b = VitalBuilder(T0, T0 + 10).device(1, "SNUADC").track(1, "PLETH", srate=500, did=1)
    b.track(2, "ECG_II", srate=500, did=1).wave(1, T0, np.ones(500, np.float32)).wave(2, T0, np.ones(500, np.float32))
    b.wave(1, float("nan"), np.ones(5, np.float32))
    with pytest.raises(CaseError) as e:
        read_case(b.write(tmp_path / "2.vital"), 2, **TRACKS)
    assert e.value.reason == "unreadable" and "'SNUADC/PLETH'" in str(e.value)
