"""Getting the data: download from a (local) archive, no-network message, checksums, the scripts."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest

import rmseg.data
from rmseg.data import download, la
from rmseg.data.prepared import sha256
from rmseg.data.synthetic import write_gs_synthetic, write_la_synthetic

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import download_data  # noqa: E402
import make_synthetic  # noqa: E402
import prepare_drishti  # noqa: E402
import prepare_la  # noqa: E402


def zip_folder(folder: Path, inner: str, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.name.startswith("dataset.json"):
                zf.write(path, f"{inner}/{path.relative_to(folder)}")
    return archive


def test_download_unpacks_prepares_and_skips_next_time(tmp_path, monkeypatch, capsys):
    """The mirror's archive holds data/{Training,Test}; it lands in drishti-gs1/Drishti-GS1_files."""
    release = write_gs_synthetic(tmp_path / "mirror", 2, 1, (48, 40)) / "Drishti-GS1_files"
    archive = zip_folder(release, "repo-abc/data", tmp_path / "mirror.zip")
    monkeypatch.setitem(download.SOURCES, "drishti-gs1",
                        download.Source("drishti-gs1", archive.as_uri(), "repo-abc/data", "Drishti-GS1_files"))
    monkeypatch.setattr(rmseg.data, "DATA_DIR", tmp_path / "repo_data")
    root = tmp_path / "data"
    assert download_data.main(["--root", str(root), "--datasets", "drishti-gs1"]) == 0
    assert "downloaded into" in capsys.readouterr().out
    assert len(download.drishti.list_cases(root / "drishti-gs1")) == 3
    prepared = tmp_path / "repo_data/prepared/gs_real_512x512_t128/dataset.json"
    assert json.loads(prepared.read_text())["split"]["test"] == ["drishtiGS_003"]
    assert not list(root.glob(".drishti-gs1.tmp*"))
    assert download_data.main(["--root", str(root), "--datasets", "drishti-gs1"]) == 0
    assert "found at" in capsys.readouterr().out


def test_la_download_lands_in_the_h5_layout_and_checksums_are_checked(tmp_path, monkeypatch, capsys):
    """UA-MT's archive holds data/{train.list, test.list, 2018LA_Seg_Training Set/...}: target "." puts
    that folder's content directly in <root>/la2018, where the LA reader looks; the pinned SHA-256 of
    the protocol's files are then checked (a mismatch fails naming the file and both hashes)."""
    ids = [f"CASE{n:02d}" for n in range(36)]  # the protocol reads the first 16 of train.list and 20 of test.list
    mirror = tmp_path / "mirror"
    for n, case_id in enumerate(ids):
        label = np.zeros((4, 3, 2), np.uint8)
        label[1:3, 1, :] = 1
        la.write_h5(la.h5_path(mirror, case_id), np.full((4, 3, 2), n, np.float32), label)
    la.write_lists(mirror, ids[:16], ids[16:])
    archive = zip_folder(mirror, "UA-MT-abc/data", tmp_path / "ua-mt.zip")
    monkeypatch.setitem(download.SOURCES, "la2018", download.Source("la2018", archive.as_uri(), "UA-MT-abc/data", "."))
    pinned = {f"2018LA_Seg_Training Set/{i}/mri_norm2.h5": hashlib.sha256(la.h5_path(mirror, i).read_bytes()).hexdigest()
              for i in (ids[0], ids[35])}
    monkeypatch.setattr(download, "LA2018_SHA256", pinned)

    root = tmp_path / "data"
    assert download_data.main(["--root", str(root), "--datasets", "la2018"]) == 0
    out = capsys.readouterr().out
    assert "la2018: downloaded into" in out and "2 files of the 16/20 protocol match" in out
    assert "ready (16 training / 20 test cases" in out
    assert (root / "la2018" / "train.list").is_file() and not (root / "la2018" / "data").exists()
    assert la.is_h5_layout(root / "la2018") and sorted(p.name for p in root.iterdir()) == [".downloads", "la2018"]
    cases = la.split_cases(root / "la2018", "test")
    assert [c["id"] for c in cases] == ids[16:]
    image, label = la.read_h5(cases[-1]["path"])
    assert image.shape == (4, 3, 2) and (image == 35).all() and label.sum() == 4

    last = f"2018LA_Seg_Training Set/{ids[35]}/mri_norm2.h5"
    wrong = "0" * 64
    monkeypatch.setattr(download, "LA2018_SHA256", {**pinned, last: wrong})
    with pytest.raises(ValueError, match=rf"{ids[35]}/mri_norm2\.h5 has SHA-256 {pinned[last]}, expected {wrong}: the file is damaged"):
        download_data.main(["--root", str(root), "--datasets", "la2018"])
    assert "la2018: found at" in capsys.readouterr().out  # present: checked again, not downloaded again

    fresh = tmp_path / "fresh"  # same mismatch straight after a download
    with pytest.raises(ValueError, match=r"the file is damaged; delete .*la2018 and .*\.downloads/la2018\.zip \(the cached archive, if there\), then download again"):
        download_data.main(["--root", str(fresh), "--datasets", "la2018"])
    assert "la2018: downloaded into" in capsys.readouterr().out


def test_no_network_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(download.urllib.request, "urlopen", offline)
    assert download_data.main(["--root", str(tmp_path), "--datasets", "la2018"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("no network:") and "\n" not in err
    assert "RMSEG_DATA_ROOT=" in err and "data.root=" in err
    assert not list((tmp_path / ".downloads").glob("*"))  # no partial archive left


def test_bad_archive_is_named(tmp_path, monkeypatch):
    (tmp_path / ".downloads").mkdir()
    (tmp_path / ".downloads" / "la2018.zip").write_bytes(b"PK not really")
    with pytest.raises(ValueError, match=r"la2018.zip is not a valid zip archive.*delete it"):
        download.fetch(download.SOURCES["la2018"], tmp_path)


def test_la_checksums_catch_a_damaged_file(tmp_path, monkeypatch):
    root = write_la_synthetic(tmp_path / "la", 1, 1, (8, 8, 4))
    relative = "2018LA_Seg_Training Set/SYNTH000/mri_norm2.h5"
    monkeypatch.setattr(download, "LA2018_SHA256", {relative: sha256(root / relative)})
    assert download.verify_la(root) == 1
    with open(root / relative, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ValueError, match="SYNTH000/mri_norm2.h5 has SHA-256 .* damaged"):
        download.verify_la(root)


@pytest.mark.realdata
def test_real_la_files_match_pinned_checksums(shared_data):
    assert download.verify_la(shared_data / "la2018") == 38


def test_scripts_end_to_end(tmp_path, capsys):
    assert make_synthetic.main(["gs", "--out", str(tmp_path / "gs"), "--num-train", "2", "--num-test", "1",
                                "--shape", "40", "48"]) == 0
    assert prepare_drishti.main(["--root", str(tmp_path / "gs"), "--out", str(tmp_path / "p"), "--image-size", "16", "24"]) == 0
    assert "2 training / 1 test" in capsys.readouterr().out
    with pytest.raises(FileExistsError, match="--out"):
        prepare_drishti.main(["--root", str(tmp_path / "gs"), "--out", str(tmp_path / "p"), "--image-size", "16", "16"])
    assert make_synthetic.main(["la", "--out", str(tmp_path / "la"), "--num-train", "2", "--num-test", "1",
                                "--shape", "16", "16", "8"]) == 0
    assert prepare_la.main(["--root", str(tmp_path / "la"), "--num-train", "2"]) == 0
    with pytest.raises(FileNotFoundError, match="1 of the 3 train ids are absent"):
        shutil.rmtree(tmp_path / "la" / "2018LA_Seg_Training Set" / "SYNTH001")
        (tmp_path / "la" / "train.list").write_text("SYNTH000\nSYNTH001\nSYNTH002\n")
        prepare_la.main(["--root", str(tmp_path / "la"), "--num-train", "3"])
