"""Conversions to the canonical arrays, without the service: dtypes, bad columns, the zip
guards (absolute paths, symlinks, a member that inflates past the cap whatever its header
says), and the fallback to the .npz for datasets uploaded before the canonical arrays."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from distill.canonical import convert
from distill.errors import DistillError
from distill.image_zip import ZipLimits

LIMITS = ZipLimits(max_entries=100, max_expanded_bytes=1 << 20, max_decoded_bytes=1 << 30)


def _convert(tmp_path: Path, fmt: str, data: bytes, **options: object):
    source = tmp_path / f"upload.{fmt}"
    source.write_bytes(data)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return convert(fmt, source, dict(options), out, 1 << 30, 1000, LIMITS)


def test_integer_tables_are_token_ids_and_float_tables_float32(tmp_path: Path) -> None:
    ints = _convert(tmp_path, "csv", b"a,b,y\n1,2,0\n3,4,1\n", label_column="y")
    assert ints.x_dtype == "int64" and np.load(ints.x_path).tolist() == [[1, 2], [3, 4]]
    assert np.load(ints.y_path).tolist() == [0, 1] and ints.num_classes == 2
    floats = _convert(tmp_path, "csv", b"a,b\n1,2.5\n3,4\n")
    assert floats.x_dtype == "float32" and floats.y_path is None
    assert np.load(floats.x_path).dtype == np.float32


def test_a_text_value_late_in_a_csv_names_its_column(tmp_path: Path) -> None:
    rows = b"".join(b"%d,%d\n" % (i, i) for i in range(600_000))
    with pytest.raises(DistillError, match="value in the column 'b' that is not a number"):
        _convert(tmp_path, "csv", b"a,b\n" + rows + b"7,seven\n")


def test_negative_or_fractional_labels_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DistillError, match="negative labels"):
        _convert(tmp_path, "csv", b"a,y\n1,-1\n", label_column="y")
    with pytest.raises(DistillError, match="non-integer"):
        _convert(tmp_path, "csv", b"a,y\n1,0.5\n", label_column="y")


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8), "L").save(buffer, "PNG")
    return buffer.getvalue()


def test_absolute_paths_and_symlinks_are_refused(tmp_path: Path) -> None:
    absolute = io.BytesIO()
    with zipfile.ZipFile(absolute, "w") as archive:
        archive.writestr("/etc/a/0.png", _png())
    with pytest.raises(DistillError, match="points outside the archive"):
        _convert(tmp_path, "image-zip", absolute.getvalue(), image_size=[4, 4])
    link = io.BytesIO()
    with zipfile.ZipFile(link, "w") as archive:
        info = zipfile.ZipInfo("a/0.png")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    with pytest.raises(DistillError, match="symbolic link"):
        _convert(tmp_path, "image-zip", link.getvalue(), image_size=[4, 4])


def test_a_member_is_cut_at_the_cap_whatever_its_header_declares(tmp_path: Path) -> None:
    """A member declared at 100 bytes that inflates to 2 MiB never yields more than its
    declared size (zipfile) and never more than the cap (image_zip._read): refused."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a/0.png", bytes(2 << 20))
    data = bytearray(buffer.getvalue())
    # Rewrite the uncompressed size in the local header (offset 22) and the central
    # directory (offset 24 of its entry) to 100 bytes: the header lies.
    data[22:26] = (100).to_bytes(4, "little")
    central = data.rfind(b"PK\x01\x02")
    data[central + 24 : central + 28] = (100).to_bytes(4, "little")
    with pytest.raises(DistillError, match="does not match its header"):
        _convert(tmp_path, "image-zip", bytes(data), image_size=[4, 4])


def test_an_image_zip_decodes_to_chw_in_unit_range(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for label in ("b", "a"):
            archive.writestr(f"set/{label}/0.png", _png())
    done = _convert(tmp_path, "image-zip", buffer.getvalue(), image_size=[6, 5], channels=3)
    x = np.load(done.x_path)
    assert x.shape == (2, 3, 6, 5) and x.dtype == np.float32 and 0 <= x.min() <= x.max() <= 1
    assert done.classes == ("a", "b") and np.load(done.y_path).tolist() == [0, 1]


def test_datasets_from_before_the_canonical_arrays_load_from_their_npz(tmp_path: Path) -> None:
    from core.storage import ArtifactStore
    from workers.stages.inputs import load_arrays, load_rows

    store = ArtifactStore(str(tmp_path / "store"))
    buffer = io.BytesIO()
    np.savez(buffer, x=np.arange(6, dtype=np.int64).reshape(3, 2), y=np.array([0, 1, 0]))
    buffer.seek(0)
    blob = store.put_blob(buffer)
    old = SimpleNamespace(storage_key=blob.key, arrays=None)
    x, y = load_arrays(store, old)  # type: ignore[arg-type]
    # Integer x stays int64 (token ids for a student that embeds them); float models cast it.
    assert x.dtype == np.int64 and y is not None and y.tolist() == [0, 1, 0]
    rows, _ = load_rows(store, old)  # type: ignore[arg-type]
    assert rows[1:3].tolist() == [[2, 3], [4, 5]]


def test_a_decimal_late_in_an_integer_looking_column_makes_it_float(tmp_path: Path) -> None:
    rows = b"".join(b"%d,%d,%d\n" % (i, i, i % 3) for i in range(600_000))
    done = _convert(tmp_path, "csv", b"a,b,y\n" + rows + b"7,7.5,1\n", label_column="y")
    x = np.load(done.x_path, mmap_mode="r")
    assert done.x_dtype == "float32" and x.shape == (600_001, 2) and x[-1].tolist() == [7.0, 7.5]
    assert done.num_classes == 3


def test_too_many_entries_are_refused_before_any_is_read(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(LIMITS.max_entries + 1):
            archive.writestr(f"a/{i}.png", b"")
    with pytest.raises(DistillError, match="has 101 entries, more than this server's limit of 100"):
        _convert(tmp_path, "image-zip", buffer.getvalue(), image_size=[4, 4])
