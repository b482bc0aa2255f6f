"""`calcimeasure study` and `calcimeasure compare`: pairing rules, manifest, tables, pictures, report, exit codes."""

from __future__ import annotations

import copy
import json
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

import calcimeasure
from calcimeasure.batch import BatchUsageError
from calcimeasure.batch.grouping import group_films, load_manifest, plan_pairs
from calcimeasure.cli import main

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_images"


# ---------------------------------------------------------------------------------------------
# Helpers (also used by test_study_resume.py and test_dask.py)


def write_pair(folder: Path, stem: str, *, seed: int = 1, response: str = "partial", patient: str = "PAT-A",
               body_part: str | None = "HAND", laterality: str | None = "R", view: str | None = "PA",
               dates: tuple[str | None, str | None] = ("20200110", "20201012"), rows: int = 256,
               cols: int = 224) -> tuple[Path, Path]:
    """A small phantom baseline / follow-up pair (fingers, easy) written as DICOM with the given
    Patient ID, Body Part Examined, Laterality, View Position and Study Dates (None removes a tag)."""
    from calcimeasure.phantom import PairSpec, PhantomSpec, render_pair, write_dicom

    pair = render_pair(PhantomSpec.preset("easy", body_part="fingers", rows=rows, cols=cols), seed=seed,
                       pair=PairSpec(response=response))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for film, date, role in ((pair.baseline, dates[0], "baseline"), (pair.followup, dates[1], "followup")):
        ds = copy.deepcopy(film.dataset)
        ds.PatientID = patient
        for tag, value in (("BodyPartExamined", body_part), ("ImageLaterality", laterality),
                           ("Laterality", laterality), ("ViewPosition", view), ("StudyDate", date)):
            if value is None:
                if tag in ds:
                    delattr(ds, tag)
            else:
                setattr(ds, tag, value)
        if date is None:
            for tag in ("ContentDate", "AcquisitionDate", "SeriesDate"):
                if tag in ds:
                    delattr(ds, tag)
        else:
            ds.ContentDate = date
        p = folder / f"{stem}_{role}.dcm"
        write_dicom(ds, p)
        paths.append(p)
    return paths[0], paths[1]


def read(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / f"{name}.csv")


class _Html(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict] = []
        self.stack: list[str] = []
        self.tables: dict[str, int] = {}
        self.links: list[str] = []
        self._table: str | None = None
        self._in_tbody = False
        self.scripts_src: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a)
        elif tag == "table":
            self._table = a.get("id")
            if self._table:
                self.tables[self._table] = 0
        elif tag == "tbody":
            self._in_tbody = True
        elif tag == "tr" and self._in_tbody and self._table:
            self.tables[self._table] += 1
        elif tag in ("link", "iframe", "object", "embed") and (a.get("href") or a.get("src")):
            self.links.append(a.get("href") or a.get("src"))
        elif tag == "script" and a.get("src"):
            self.scripts_src.append(a["src"])

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_tbody = False
        elif tag == "table":
            self._table = None


def parse_report(path: Path) -> _Html:
    p = _Html()
    p.feed(path.read_text("utf-8"))
    return p


# ---------------------------------------------------------------------------------------------
# Pairing rules (no images)


def _im(file, patient="P1", body="HAND", lat="R", view="PA", date="2020-01-01", sha=None):
    return {"file": file, "sha256": sha or f"sha-{file}", "patient_key": patient, "body_part": body,
            "laterality": lat, "view": view, "study_date": date}


def test_groups_by_patient_region_laterality_view_and_orders_by_date():
    images = [
        _im("a/late.dcm", date="2021-06-01"),
        _im("a/early.dcm", date="2019-01-01"),
        _im("a/mid.dcm", date="2020-03-01", body="hand", lat="r", view=" pa "),  # case and blanks ignored
        _im("b/other_patient.dcm", patient="P2", date="2019-01-01"),
        _im("b/other_patient2.dcm", patient="P2", date="2020-01-01"),
        _im("c/left.dcm", lat="L", date="2019-05-01"),  # other side: alone
        _im("c/lateral.dcm", view="LAT", date="2019-05-01"),  # other view: alone
        _im("c/knee.dcm", body="KNEE", date="2019-05-01"),  # other region: alone
    ]
    groups, films = group_films(images)
    assert [g.id for g in groups] == ["G001", "G002"]
    assert [f.file for f in groups[0].films] == ["a/early.dcm", "a/mid.dcm", "a/late.dcm"]
    assert [f.file for f in groups[1].films] == ["b/other_patient.dcm", "b/other_patient2.dcm"]
    roles = {f.file: (f.group, f.order, f.role) for f in films}
    assert roles["a/early.dcm"] == ("G001", 0, "baseline")
    assert roles["a/late.dcm"] == ("G001", 2, "followup")
    for alone in ("c/left.dcm", "c/lateral.dcm", "c/knee.dcm"):
        assert roles[alone] == (None, None, "single")
    plans = plan_pairs(groups)
    assert [(p.pair_id, p.baseline.file, p.followup.file) for p in plans] == [
        ("G001-1", "a/early.dcm", "a/mid.dcm"),
        ("G001-2", "a/early.dcm", "a/late.dcm"),
        ("G002-1", "b/other_patient.dcm", "b/other_patient2.dcm"),
    ]
    assert plans[0].interval_days == (pd.Timestamp("2020-03-01") - pd.Timestamp("2019-01-01")).days


def test_vs_previous_adds_the_film_before():
    images = [_im(f"f{k}.dcm", date=f"202{k}-01-01") for k in range(4)]
    groups, _ = group_films(images)
    plans = plan_pairs(groups, vs_previous=True)
    assert [(p.pair_id, p.comparison, p.baseline.file, p.followup.file) for p in plans] == [
        ("G001-1", "baseline", "f0.dcm", "f1.dcm"),
        ("G001-2", "baseline", "f0.dcm", "f2.dcm"),
        ("G001-2-prev", "previous", "f1.dcm", "f2.dcm"),
        ("G001-3", "baseline", "f0.dcm", "f3.dcm"),
        ("G001-3-prev", "previous", "f2.dcm", "f3.dcm"),
    ]


def test_films_that_cannot_be_placed_are_listed_with_a_reason():
    images = [
        _im("ok1.dcm", date="2019-01-01"),
        _im("ok2.dcm", date="2020-01-01"),
        _im("copy_of_ok2.dcm", date="2020-01-01", sha="sha-ok2.dcm"),
        _im("nodate.dcm", date=None),
        _im("scan.png", patient=None, body=None, lat=None, view=None, date=None),
        _im("missing_tags.dcm", body=None, lat=None, view=None, date="2019-01-01"),
    ]
    groups, films = group_films(images)
    assert len(groups) == 1 and [f.file for f in groups[0].films] == ["ok1.dcm", "ok2.dcm"]
    by = {f.file: f for f in films}
    assert len(films) == len(images)  # nothing lost
    assert by["copy_of_ok2.dcm"].role == "duplicate" and "ok2.dcm" in by["copy_of_ok2.dcm"].reason
    assert by["nodate.dcm"].role == "ungrouped" and "no study date" in by["nodate.dcm"].reason
    assert by["scan.png"].role == "ungrouped" and "no patient key" in by["scan.png"].reason
    assert by["missing_tags.dcm"].role == "single"  # missing values form their own group


def test_manifest_overrides_metadata_and_orders_by_timepoint(tmp_path):
    man = tmp_path / "manifest.csv"
    man.write_text(
        "file,patient,region,timepoint\n"
        "scans/knee_b.png,case7,knee,1\n"
        "scans/knee_a.png,case7,knee,0\n"
        "knee_c.png,case7,Knee,2\n"  # a file name alone matches too
        "dicom/wrongdate.dcm,case9,hand,2021-01-01\n"
        "dicom/other.dcm,case9,hand,2020-01-01\n"
        "nowhere.png,case1,hand,0\n"
    )
    m = load_manifest(man)
    images = [
        _im("in/scans/knee_b.png", patient=None, body=None, lat=None, view=None, date=None),
        _im("in/scans/knee_a.png", patient=None, body=None, lat=None, view=None, date=None),
        _im("in/more/knee_c.png", patient=None, body=None, lat=None, view=None, date=None),
        _im("in/dicom/wrongdate.dcm", patient="PX", date="1999-01-01"),  # manifest wins over the header
        _im("in/dicom/other.dcm", patient="PY", body="FOOT", date="2030-01-01"),
        _im("in/dicom/unlisted.dcm", patient="PX", date="2000-01-01"),
    ]
    groups, films = group_films(images, m, salt="s")
    assert [[f.file for f in g.films] for g in groups] == [
        ["in/scans/knee_a.png", "in/scans/knee_b.png", "in/more/knee_c.png"],
        ["in/dicom/other.dcm", "in/dicom/wrongdate.dcm"],
    ]
    by = {f.file: f for f in films}
    assert by["in/scans/knee_a.png"].grouped_by == "manifest" and by["in/dicom/unlisted.dcm"].grouped_by == "dicom"
    assert by["in/dicom/unlisted.dcm"].role == "single"
    # The manifest's patient is pseudonymised, never written as given.
    assert by["in/scans/knee_a.png"].patient_key.startswith("P") and "case7" not in by["in/scans/knee_a.png"].patient_key
    assert m.unmatched_keys([f["file"] for f in images]) == ["nowhere.png"]
    assert plan_pairs(groups)[0].interval_days is None  # ordinal timepoints: no interval


@pytest.mark.parametrize("text, message", [
    ("file,patient,timepoint\na.png,p,0\n", "missing column"),
    ("file,patient,region,timepoint\na.png,p,knee,soon\n", "neither an ISO date"),
    ("file,patient,region,timepoint\na.png,p,knee,0\nb.png,p,knee,2020-01-01\n", "mixed"),
    ("file,patient,region,timepoint\na.png,p,knee,1\nb.png,p,knee,1\n", "same timepoint"),
    ("file,patient,region,timepoint\na.png,p,knee,1\na.png,p,knee,2\n", "listed twice"),
    ("file,patient,region,timepoint\na.png,,knee,1\n", "empty patient"),
])
def test_bad_manifest_is_a_usage_error(tmp_path, text, message, capsys):
    man = tmp_path / "m.csv"
    man.write_text(text)
    with pytest.raises(BatchUsageError, match=message):
        load_manifest(man)
    (tmp_path / "in").mkdir()
    assert main(["study", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--manifest", str(man)]) == 2
    assert message.split()[0] in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written


# ---------------------------------------------------------------------------------------------
# The sample images, end to end



@pytest.fixture(scope="module")
def sample_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "out"
    code = main(["study", str(SAMPLES), "--out", str(out), "--jobs", "2", "--quiet"])
    return code, out


@pytest.fixture(scope="module")
def library_results():
    """calcimeasure.compare on each sample pair (each film measured once, then compared)."""
    gt = json.loads((SAMPLES / "ground_truth.json").read_text())
    res = {}
    for case, c in gt["cases"].items():
        b = calcimeasure.measure(SAMPLES / c["files"]["baseline"])
        f = calcimeasure.measure(SAMPLES / c["files"]["followup"])
        res[case] = (c, calcimeasure.compare(b, f))
    return res


def test_sample_study_writes_every_output(sample_study):
    code, out = sample_study
    assert code == 0
    for name in ("measurements.csv", "lesions.csv", "changes.csv", "lesion_changes.csv", "groups.csv",
                 "errors.csv", "report.html", "params.json", "calcimeasure.log"):
        assert (out / name).is_file(), name
    meas, changes, groups = read(out, "measurements"), read(out, "changes"), read(out, "groups")
    assert len(meas) == 8 and len(read(out, "errors")) == 0
    assert len(changes) == 4 and list(changes["pair_id"]) == ["G001-1", "G002-1", "G003-1", "G004-1"]
    assert (groups["role"] == "baseline").sum() == 4 and (groups["role"] == "followup").sum() == 4
    assert all(Path(b).name.replace("baseline", "followup") == Path(f).name
               for b, f in zip(changes["baseline_file"], changes["followup_file"]))
    assert len(list((out / "overlays").glob("*.png"))) == 8
    for pic in changes["side_by_side"]:
        img = cv2.imread(str(out / pic))
        assert img is not None and img.shape[1] > img.shape[0]  # two panels side by side
    lc = read(out, "lesion_changes")
    assert set(lc["pair_id"]) <= set(changes["pair_id"])
    settings = json.loads((out / "params.json").read_text())
    assert settings["comparison"]["partial_pct"] == -25.0 and settings["calcimeasure_version"]
    assert not list(out.rglob(".*.tmp"))


def test_changes_equal_calcimeasure_compare_and_measurements(sample_study, library_results):
    _code, out = sample_study
    changes = read(out, "changes").set_index("pair_id")
    meas = read(out, "measurements").set_index("file")
    for k, (case, (truth, cmp)) in enumerate(sorted(library_results.items()), start=1):
        row = changes.loc[f"G{k:03d}-1"]
        assert Path(row["baseline_file"]).name == truth["files"]["baseline"]
        assert row["response"] == cmp.response
        assert row["area_change_pct"] == pytest.approx(cmp.area_change_pct, rel=1e-9, abs=1e-9)
        assert row["baseline_total_mm2"] == pytest.approx(cmp.baseline_total_mm2, rel=1e-12)
        assert row["followup_total_mm2"] == pytest.approx(cmp.followup_total_mm2, rel=1e-12)
        assert row["baseline_lesions"] == cmp.baseline.lesion_count
        assert row["followup_lesions"] == cmp.followup.lesion_count
        assert bool(row["registration_ok"]) == cmp.registration.ok
        assert row["registration_scale"] == pytest.approx(cmp.registration.scale, rel=1e-6)
        # measurements.csv and changes.csv agree (the pair task segments both films again); the
        # paired reading's additions on a film are counted apart (guided px, also in compare())
        for side in ("baseline", "followup"):
            m = meas.loc[row[f"{side}_file"]]
            assert row[f"{side}_guided_px"] == cmp.guided_area_px(side)
            assert m["total_area_px"] == row[f"{side}_total_px"] - row[f"{side}_guided_px"]
            if row[f"{side}_guided_px"] == 0:
                assert m["total_area_mm2"] == pytest.approx(row[f"{side}_total_mm2"], rel=1e-12)
        assert "differs from measurements.csv" not in str(row["flags"])


def test_sample_responses_match_the_ground_truth(sample_study, library_results):
    """The library gets all four sample responses right today; the study must report them."""
    _code, out = sample_study
    changes = read(out, "changes")
    right_today = {case for case, (truth, cmp) in library_results.items() if cmp.response == truth["response"]}
    assert right_today == {"case01", "case02", "case03", "case04"}
    for k, case in enumerate(sorted(library_results), start=1):
        truth = library_results[case][0]
        if case in right_today:
            assert changes.loc[k - 1, "response"] == truth["response"], case


def test_report_is_self_contained_with_one_row_per_pair(sample_study):
    _code, out = sample_study
    rep = parse_report(out / "report.html")
    assert rep.imgs and all(i["src"].startswith("data:image/") for i in rep.imgs)
    assert len(rep.imgs) == 4 + 1  # one picture per pair + the waterfall plot
    assert rep.tables["cohort"] == len(read(out, "changes")) == 4
    assert not rep.links and not rep.scripts_src  # nothing loaded from elsewhere
    text = (out / "report.html").read_text()
    assert "waterfall" in text and "calcimeasure 0" in text and "&quot;segmentation&quot;" in text
    # No patient names or IDs anywhere in the outputs: only pseudonymous keys.
    for p in out.rglob("*"):
        if p.is_file() and p.suffix in (".csv", ".html", ".json", ".log"):
            t = p.read_text()
            assert "PHANTOM^" not in t and "PHANTOM-000" not in t, p


def test_rerun_needs_resume_and_resume_reuses_everything(sample_study, tmp_path, capsys):
    _code, out = sample_study
    assert main(["study", str(SAMPLES), "--out", str(out), "-q"]) == 2
    assert "--resume" in capsys.readouterr().err
    copy_ = tmp_path / "copy"
    import shutil

    shutil.copytree(out, copy_)
    assert main(["study", str(SAMPLES), "--out", str(copy_), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "(0 now, 8 reused)" in err and "4 pair(s) compared (4 reused)" in err
    pd.testing.assert_frame_equal(read(copy_, "changes"), read(out, "changes"))


# ---------------------------------------------------------------------------------------------
# compare: one pair


def test_compare_command_tables_picture_and_json(tmp_path, capsys, library_results):
    b, f = SAMPLES / "case04_baseline.dcm", SAMPLES / "case04_followup.dcm"
    out = tmp_path / "pair"
    assert main(["compare", str(b), str(f), "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    ch = read(out, "changes")
    assert len(ch) == 1
    cmp = library_results["case04"][1]
    assert ch.loc[0, "response"] == printed["pair"]["response"] == cmp.response
    assert ch.loc[0, "area_change_pct"] == pytest.approx(cmp.area_change_pct, rel=1e-9)
    assert ch.loc[0, "area_change_pct_anatomical"] == pytest.approx(cmp.area_change_pct_anatomical, rel=1e-6)
    assert ch.loc[0, "flags"] == "; ".join(cmp.flags)
    assert ch.loc[0, "partial_pct"] == -25.0 and ch.loc[0, "progression_pct"] == 25.0
    lc = read(out, "lesion_changes")
    assert len(lc) == len(cmp.lesion_changes) == len(printed["lesion_changes"])
    assert list(lc["status"]) == list(cmp.lesion_changes["status"])
    assert cv2.imread(str(out / ch.loc[0, "side_by_side"])) is not None
    assert len(read(out, "errors")) == 0
    # thresholds from the command line are used and recorded
    # (narrow bands: the measured change of this stable pair, a few %, falls outside them whatever its sign)
    assert main(["compare", str(b), str(f), "--out", str(out), "--partial-pct", "-1", "--progression-pct", "1",
                 "--no-picture"]) == 0
    ch2 = read(out, "changes")
    assert ch2.loc[0, "partial_pct"] == -1.0 and ch2.loc[0, "progression_pct"] == 1.0
    pct = ch2.loc[0, "area_change_pct"]
    assert abs(pct) >= 1 and ch2.loc[0, "response"] == ("partial" if pct <= -1 else "progression")


def test_comparison_table_of_a_params_file(tmp_path):
    b, f = write_pair(tmp_path / "in", "a", seed=12)
    params = tmp_path / "p.toml"
    params.write_text("[segmentation]\nk_high = 5.0\n\n[comparison]\nprogression_pct = 40.0\nmatch_distance_mm = 2.0\n")
    out = tmp_path / "out"
    assert main(["compare", str(b), str(f), "--out", str(out), "--params", str(params), "--no-picture"]) == 0
    row = read(out, "changes").iloc[0]
    assert row["progression_pct"] == 40.0 and row["partial_pct"] == -25.0
    settings = json.loads((out / "params.json").read_text())
    assert settings["comparison"]["match_distance_mm"] == 2.0 and settings["segmentation"]["k_high"] == 5.0
    # the run's params.json is a valid --params file for the next run
    out2 = tmp_path / "out2"
    assert main(["compare", str(b), str(f), "--out", str(out2), "--params", str(out / "params.json"),
                 "--no-picture"]) == 0
    assert read(out2, "changes").iloc[0]["comparison_digest"] == row["comparison_digest"]
    bad = tmp_path / "bad.toml"
    bad.write_text("[comparison]\nprogresion_pct = 40.0\n")
    assert main(["compare", str(b), str(f), "--out", str(out), "--params", str(bad)]) == 2


def test_compare_exit_codes(tmp_path, capsys):
    b = SAMPLES / "case04_baseline.dcm"
    bad = tmp_path / "bad.dcm"
    bad.write_text("not an image")
    assert main(["compare", str(b), str(bad), "--out", str(tmp_path / "o")]) == 1
    err = read(tmp_path / "o", "errors")
    assert err.loc[0, "error"] == "NotAnImageError" and err.loc[0, "file"] == str(bad)
    assert len(read(tmp_path / "o", "changes")) == 0
    assert main(["compare", str(b), str(SAMPLES), "--out", str(tmp_path / "o2")]) == 2  # a folder
    assert main(["compare", str(b), "--out", str(tmp_path / "o3")]) == 2  # one film only
    assert main(["compare", str(b), str(b), "--out", str(tmp_path / "o4"), "--set", "nope=1"]) == 2
    capsys.readouterr()


# ---------------------------------------------------------------------------------------------
# A folder with bad files mixed in


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    src = tmp_path_factory.mktemp("mixed") / "in"
    write_pair(src / "patA", "hand", seed=2, patient="PAT-A", response="partial")
    write_pair(src / "patB", "knee", seed=3, patient="PAT-B", body_part="KNEE", laterality="L", response="progression")
    # A third film of patient A, other side: alone in its group.
    b, f = write_pair(src / "patA_left", "left", seed=4, patient="PAT-A", laterality="L")
    f.unlink()
    # A film with no date, and a PNG scan without metadata: measured, not paired.
    nb, nf = write_pair(src / "nodate", "x", seed=5, patient="PAT-C", dates=(None, None))
    nf.unlink()
    pixels = calcimeasure.read_image(b).pixels
    cv2.imwrite(str(src / "scan.png"), np.clip(pixels, 0, 65535).astype(np.uint16))
    # Bad files: corrupt DICOM, text without extension, empty file, unsupported modality.
    from calcimeasure.phantom import PhantomSpec, render_image, write_dicom

    (src / "junk").mkdir()
    raw = Path(write_dicom(render_image(PhantomSpec.preset("easy", body_part="fingers", rows=128, cols=112), seed=9),
                           src / "junk" / "raw.dcm", transfer_syntax="explicit"))
    cut = raw.read_bytes()
    raw.unlink()
    (src / "junk" / "corrupt.dcm").write_bytes(cut[: len(cut) - 9000])
    (src / "junk" / "1.2.840.999.1").write_text("PACS export note, not an image\n")
    (src / "junk" / "empty").write_bytes(b"")
    import pydicom

    ds = pydicom.dcmread(src / "patA" / "hand_baseline.dcm")
    ds.Modality = "CT"
    ds.save_as(src / "junk" / "ct_slice")
    return src


def test_mixed_folder_bad_files_do_not_stop_the_study(mixed_folder, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["study", str(mixed_folder), "--out", str(out), "--jobs", "2"])
    assert code == 1
    err = read(out, "errors")
    by = {Path(r["file"]).name: r for _, r in err.iterrows()}
    assert set(by) == {"corrupt.dcm", "1.2.840.999.1", "empty", "ct_slice"}
    assert by["corrupt.dcm"]["error"] == "CorruptImageError"
    assert by["1.2.840.999.1"]["error"] == "NotAnImageError" and by["empty"]["error"] == "NotAnImageError"
    assert by["ct_slice"]["error"] == "UnsupportedImageError"
    assert set(err["stage"]) == {"measure"}
    meas = read(out, "measurements")
    assert len(meas) == 7
    changes = read(out, "changes")
    assert len(changes) == 2 and set(changes["body_part"]) == {"HAND", "KNEE"}
    groups = read(out, "groups").set_index(read(out, "groups")["file"].map(lambda s: Path(s).name))
    assert groups.loc["scan.png", "role"] == "ungrouped" and "no patient key" in groups.loc["scan.png", "reason"]
    assert groups.loc["x_baseline.dcm", "role"] == "ungrouped" and "no study date" in groups.loc["x_baseline.dcm", "reason"]
    assert groups.loc["left_baseline.dcm", "role"] == "single"
    assert len(groups) == len(meas)  # every measured film is listed
    rep = parse_report(out / "report.html")
    assert rep.tables["cohort"] == 2 and rep.tables["errors"] == 4 and rep.tables["unpaired"] == 3
    assert "CorruptImageError" in capsys.readouterr().err


def test_manifest_pairs_scans_without_metadata(mixed_folder, tmp_path):
    """Two PNG scans (no DICOM metadata) grouped by a manifest; everything else as usual."""
    src = tmp_path / "scans"
    src.mkdir()
    b, f = write_pair(tmp_path / "dcm", "s", seed=6)
    for p, name in ((b, "scan_2019.png"), (f, "scan_2020.png")):
        cv2.imwrite(str(src / name), np.clip(calcimeasure.read_image(p).pixels, 0, 65535).astype(np.uint16))
    man = tmp_path / "manifest.csv"
    man.write_text("file,patient,region,timepoint\nscan_2020.png,study-7,fingers,2020-05-01\n"
                   "scan_2019.png,study-7,fingers,2019-05-01\n")
    out = tmp_path / "out"
    assert main(["study", str(src), "--out", str(out), "--manifest", str(man), "--spacing", "0.15", "-q"]) == 0
    ch = read(out, "changes")
    assert len(ch) == 1 and Path(ch.loc[0, "baseline_file"]).name == "scan_2019.png"
    assert ch.loc[0, "baseline_date"] == "2019-05-01" and ch.loc[0, "interval_days"] == 366
    assert "study-7" not in (out / "changes.csv").read_text()
    assert set(read(out, "groups")["grouped_by"]) == {"manifest"}
    # without the manifest the scans cannot be paired
    out2 = tmp_path / "out2"
    assert main(["study", str(src), "--out", str(out2), "-q"]) == 0
    assert len(read(out2, "changes")) == 0 and set(read(out2, "groups")["role"]) == {"ungrouped"}


def test_study_usage_errors(tmp_path, capsys):
    src = tmp_path / "in"
    write_pair(src, "a", seed=7)
    assert main(["study", str(src), "--out", str(src / "results")]) == 2  # inside the input
    assert main(["study", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert main(["study", str(src), "--out", str(tmp_path / "o"), "--dask", "--scheduler", "tcp://x:1"]) == 2
    assert main(["study", str(src), "--out", str(tmp_path / "o"), "--jobs", "0"]) == 2
    assert main(["study", str(src), "--out", str(tmp_path / "o"), "--partial-pct", "5"]) == 2
    assert main(["study"]) == 2
    capsys.readouterr()


def test_study_outputs_are_written_atomically(tmp_path, monkeypatch):
    """Every file of DIR (but the appended log) is written through atomic_write (temp + rename)."""
    import calcimeasure.batch.outputs as outputs

    written = []
    real = outputs.atomic_write

    def spy(path, writer):
        written.append(Path(path).resolve())
        return real(path, writer)

    monkeypatch.setattr(outputs, "atomic_write", spy)
    src = tmp_path / "in"
    write_pair(src, "a", seed=8)
    out = tmp_path / "out"
    assert main(["study", str(src), "--out", str(out), "--jobs", "1", "--vs-previous", "--parquet", "-q"]) == 0
    files = [p.resolve() for p in out.rglob("*") if p.is_file() and p.name != "calcimeasure.log"]
    assert {p.suffix for p in files} >= {".csv", ".parquet", ".png", ".json", ".html"}
    missing = [str(p) for p in files if p not in written]
    assert not missing
    assert not list(out.rglob("*.tmp"))
