"""The GPU bundle (``make gpu-bundle``): the lossless LA recoding, a build from the real data (size, contents,
and data that unpacks to what rmseg reads from the full release), and the wheels for the GPU image."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from benchmarks.gpu import bundle
from rmseg.data import drishti, la

MIB = 2**20


@pytest.mark.parametrize("levels", [7, 300])  # uint8 and uint16 indices
def test_volume_recoding_is_lossless(levels):
    rng = np.random.default_rng(0)
    values = rng.normal(size=levels).astype(np.float32)
    image = values[rng.integers(0, levels, size=(20, 18, 6))]
    label = (rng.random((20, 18, 6)) > 0.7).astype(np.uint8)
    arrays = bundle.encode_volume(image, label)
    assert arrays["index_dtype"] == ("uint8" if levels <= 256 else "uint16")
    back_image, back_label = bundle.decode_volume(arrays)
    assert back_image.dtype == np.float32 and np.array_equal(back_image, image) and np.array_equal(back_label, label)


@pytest.fixture(scope="module")
def built(shared_data, tmp_path_factory) -> tuple[Path, dict]:
    """The bundle's data from the real data, in the room ``make gpu-bundle`` leaves it beside ~8.5 MiB of wheels."""
    out = tmp_path_factory.mktemp("gpu")
    limit = min(bundle.BUNDLE_LIMIT, bundle.TRAVEL_LIMIT - bundle.TRAVEL_MARGIN - (bundle.tree_bytes() or 0))
    return out, bundle.build(shared_data, out, limit=limit - int(8.5 * MIB), wheels=False)


@pytest.mark.realdata
def test_bundle_holds_every_drishti_image_and_the_la_protocol_within_its_size(built):
    out, manifest = built
    on_disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert on_disk <= manifest["limit_bytes"] and manifest["bytes"] <= on_disk
    assert manifest["limit_bytes"] + int(8.5 * MIB) <= bundle.BUNDLE_LIMIT
    if manifest["tree_bytes"] is not None:  # with the working tree, within what one device call carries
        assert manifest["tree_bytes"] + on_disk + int(8.5 * MIB) <= bundle.TRAVEL_LIMIT
    data = out / "data"
    for split, (folder, gt) in bundle.DRISHTI_SPLITS.items():
        images = sorted((data / "drishti-gs1" / "Drishti-GS1_files" / folder / "Images").glob("*.webp"))
        assert len(images) == {"train": 50, "test": 51}[split] == manifest["data"]["drishti-gs1"][split]
        assert all((p.parent.parent / gt / p.stem / "SoftMap" / f"{p.stem}_cupsegSoftmap.png").is_file() for p in images)
    ids = manifest["data"]["la2018"]
    # the test cases fill what the working tree leaves of one call's 64 MiB; committed run records shrink it
    assert len(ids["train"]) == 16 and 2 <= len(ids["test"]) <= 20
    assert (data / "la2018" / "train.list").read_text().split() == ids["train"]
    assert (data / "la2018" / "test.list").read_text().split() == ids["test"]
    assert sorted(p.parent.name for p in (data / "la2018").rglob(bundle.LA_FILE)) == sorted(ids["train"] + ids["test"])
    assert set(manifest["files"]) == {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {bundle.MANIFEST}
    again = bundle.build(manifest["data_key"]["data_root"], out, limit=manifest["limit_bytes"], wheels=False)
    assert again["data"] == manifest["data"] and again["files"] == manifest["files"]  # reused, not rewritten


@pytest.mark.realdata
def test_unpacked_bundle_reads_as_the_full_release_prepared_at_512(built, shared_data, tmp_path):
    out, manifest = built
    root = bundle.unpack(out, tmp_path / "data")
    ids = manifest["data"]["la2018"]
    for case in la.split_cases(root / "la2018", "train", 16) + la.split_cases(root / "la2018", "test"):
        image, label = la.read_h5(case["path"])
        source_image, source_label = la.read_h5(la.h5_path(shared_data / "la2018", case["id"]))
        assert np.array_equal(image, source_image) and np.array_equal(label, source_label), case["id"]
    assert len(la.split_cases(root / "la2018", "test")) == len(ids["test"])
    ours = {c.id: c for c in drishti.list_cases(root / "drishti-gs1")}
    full = drishti.list_cases(shared_data / "drishti-gs1")
    assert sorted(ours) == sorted(c.id for c in full)
    for case in full[::25]:  # what preparing at 512x512 writes, from the bundle and from the full release
        image, labels = drishti.read_case(ours[case.id], 128, 2)
        full_image, full_labels = drishti.read_case(case, 128, 2)
        assert np.array_equal(drishti.resize_image(image, (512, 512)), drishti.resize_image(full_image, (512, 512)))
        assert np.array_equal(drishti.resize_labels(labels, (512, 512)), drishti.resize_labels(full_labels, (512, 512)))


def test_wheels_install_for_the_gpu_images_python(tmp_path):
    """One wheel per missing package for CPython 3.12 manylinux x86-64, installable without an index."""
    try:
        records = bundle.download_wheels(tmp_path / "wheels")
    except RuntimeError as err:
        if "PyPI must be reachable" in str(err):
            pytest.skip(f"no wheels without PyPI: {str(err)[:200]}")
        raise
    assert [r["name"] for r in records] == list(bundle.PACKAGES)
    for record in records:
        tags = record["file"].rsplit("-", 3)[1:]
        assert tags[:2] in (["py3", "none"], ["cp312", "cp312"]) and re.match(r"(any|manylinux.*x86_64)\.whl", tags[2])
        with zipfile.ZipFile(tmp_path / "wheels" / record["file"]) as wheel:
            assert wheel.testzip() is None
    assert sum(r["bytes"] for r in records) <= 8.5 * MIB  # the room the data leaves them
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(site),
                    *bundle.PLATFORM, *map(str, sorted((tmp_path / "wheels").glob("*.whl")))], check=True)
    for module in ("monai", "hydra", "omegaconf", "antlr4", "nibabel"):
        assert (site / module / "__init__.py").is_file(), module
    assert list(site.glob("edt*.so")) or list(site.glob("edt/*.so"))
    again = bundle.download_wheels(tmp_path / "wheels")  # present: nothing downloaded, one version each
    assert again == records and len(list((tmp_path / "wheels").glob("*.whl"))) == len(bundle.PACKAGES)
