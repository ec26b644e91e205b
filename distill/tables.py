"""CSV and Parquet data sets, converted to the canonical arrays in record batches.

Every column but the label column is a feature, in file order: x is (N, F).
A table whose feature columns are all integers holds token ids and becomes
int64; otherwise x is float32. The label column holds class ids 0..C-1; with no
label column named, the set is unlabeled (a transfer set). Batches are read
with pyarrow and appended to the .npy files as they come, so memory is one
batch whatever the file's size.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from distill.errors import DistillError
from distill.npy_io import Converted, NpyWriter

BATCH_ROWS = 65_536
CSV_BLOCK_BYTES = 4 * 1024 * 1024


def _numeric(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
    )


def _check_schema(schema: pa.Schema, label: str | None, what: str) -> tuple[list[str], bool]:
    """The feature columns, and whether they are all integers (token ids)."""
    names = list(schema.names)
    if label is not None and label not in names:
        raise DistillError(
            f"The {what} has no column named '{label}' (columns: {', '.join(names[:20])}); send "
            "the label column's exact name in 'label_column', or leave it out for an unlabeled set."
        )
    features = [n for n in names if n != label]
    if not features:
        raise DistillError(f"The {what} has no feature columns besides the label column.")
    if len(set(names)) != len(names):
        raise DistillError(f"The {what} repeats a column name; give every column its own name.")
    for name in names:
        kind = schema.field(name).type
        if not _numeric(kind) and not pa.types.is_null(kind):
            role = "label column" if name == label else "column"
            raise DistillError(
                f"The {role} '{name}' of the {what} holds {kind} values, not numbers; encode "
                "it as numbers or drop it before uploading."
            )
    integer = all(pa.types.is_integer(schema.field(n).type) for n in features)
    return features, integer


def _column(batch: pa.RecordBatch, name: str, what: str) -> np.ndarray:
    column = batch.column(batch.schema.get_field_index(name))
    if column.null_count:
        raise DistillError(
            f"The column '{name}' of the {what} has empty, missing or NaN values; fill or drop "
            "those rows before uploading."
        )
    return column.to_numpy(zero_copy_only=False)


def convert_table(
    batches: Iterator[pa.RecordBatch],
    schema: pa.Schema,
    label: str | None,
    what: str,
    out: Path,
    max_bytes: int,
    max_classes: int,
) -> Converted:
    features, integer = _check_schema(schema, label, what)
    dtype = np.int64 if integer else np.float32
    width = len(features)
    x_path, y_path = out / "x.npy", (out / "y.npy" if label is not None else None)
    high = -1
    with NpyWriter(x_path, dtype, (width,)) as xs:
        ys = NpyWriter(y_path, np.int64, ()) if y_path is not None else None
        try:
            for batch in batches:
                # (b, F): one column at a time into the block, in the canonical dtype.
                block = np.empty((batch.num_rows, width), dtype=dtype)
                for j, name in enumerate(features):
                    values = _column(batch, name, what)
                    if not integer and not np.isfinite(values.astype(np.float32)).all():
                        raise DistillError(
                            f"The column '{name}' of the {what} holds NaN or infinite values "
                            "(or numbers beyond float32's range); clean them before uploading."
                        )
                    block[:, j] = values
                xs.append(block)
                if ys is not None and label is not None:
                    high = max(high, _labels(ys, _column(batch, label, what), label, max_classes))
                if (xs.rows * width * np.dtype(dtype).itemsize) + xs.rows * 8 > max_bytes:
                    raise DistillError(
                        f"The {what} holds more than this server's limit of {max_bytes} bytes "
                        "once converted for training; upload fewer rows, or ask the operator "
                        "to raise STILLHOUSE_MAX_DATASET_DECODED_BYTES."
                    )
        finally:
            if ys is not None:
                ys.close()
    if xs.rows == 0:
        raise DistillError(f"The {what} has no rows; upload a file with at least one sample.")
    return Converted(
        num_samples=xs.rows,
        sample_shape=(width,),
        num_classes=high + 1 if label is not None else None,
        x_path=x_path,
        y_path=y_path,
        x_dtype=np.dtype(dtype).name,
        source_dtype="int64" if integer else "float",
    )


def _labels(writer: NpyWriter, values: np.ndarray, name: str, max_classes: int) -> int:
    """Append one batch's labels; returns its highest label."""
    if values.dtype.kind == "f" and not (
        np.isfinite(values).all() and (values == np.round(values)).all()
    ):
        raise DistillError(
            f"The label column '{name}' holds non-integer values; store class ids 0..C-1 "
            "as integers."
        )
    if len(values) == 0:
        return -1
    low, high = values.min().item(), values.max().item()
    if low < 0:
        raise DistillError(
            f"The label column '{name}' holds negative labels (min {int(low)}); class labels "
            "must be 0..C-1 integers."
        )
    if high >= max_classes or not math.isfinite(high):
        raise DistillError(
            f"The label column '{name}' holds the label {high}, but this server accepts at most "
            f"{max_classes} classes; store class ids 0..C-1."
        )
    writer.append(values.astype(np.int64))
    return int(high)


class _Widen(Exception):
    """A column inferred as integers from the first block holds a decimal further on."""

    def __init__(self, column: str) -> None:
        self.column = column


def convert_csv(
    path: str | os.PathLike[str], label: str | None, out: Path, max_bytes: int, max_classes: int
) -> Converted:
    """A CSV with a header row. Types are inferred from the first block; a column inferred
    as integers that holds a decimal later is read again as float64 (the conversion starts
    over), and a value that is no number at all is refused naming its column."""
    floats: dict[str, pa.DataType] = {}
    while True:
        try:
            return _convert_csv(path, label, out, max_bytes, max_classes, floats)
        except _Widen as widen:
            if widen.column in floats:
                raise AssertionError(f"column {widen.column} was widened already") from None
            floats[widen.column] = pa.float64()


def _convert_csv(
    path: str | os.PathLike[str],
    label: str | None,
    out: Path,
    max_bytes: int,
    max_classes: int,
    floats: dict[str, pa.DataType],
) -> Converted:
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
            convert_options=pacsv.ConvertOptions(column_types=floats),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DistillError(
            f"The CSV file could not be read ({exc}); check its header and rows."
        ) from exc

    def batches() -> Iterator[pa.RecordBatch]:
        while True:
            try:
                yield reader.read_next_batch()
            except StopIteration:
                return
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                found = re.search(r"column #(\d+)", str(exc))
                names = reader.schema.names
                column = (
                    names[int(found.group(1))]
                    if found and int(found.group(1)) < len(names)
                    else None
                )
                value = re.search(r"invalid value '([^']*)'", str(exc))
                if (
                    column is not None
                    and column not in floats
                    and value
                    and _is_number(value.group(1))
                ):
                    raise _Widen(column) from exc
                where = f"the column '{column}'" if column else "a column"
                raise DistillError(
                    f"The CSV file has a value in {where} that is not a number ({exc}); every "
                    "column must hold numbers only: encode it or drop it before uploading."
                ) from exc

    return convert_table(batches(), reader.schema, label, "CSV file", out, max_bytes, max_classes)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def convert_parquet(
    path: str | os.PathLike[str], label: str | None, out: Path, max_bytes: int, max_classes: int
) -> Converted:
    try:
        table = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DistillError(
            f"The file is not a readable Parquet file ({exc}); write it with "
            "pandas.DataFrame.to_parquet or pyarrow.parquet.write_table."
        ) from exc
    schema = table.schema_arrow
    return convert_table(
        table.iter_batches(batch_size=BATCH_ROWS),
        schema,
        label,
        "Parquet file",
        out,
        max_bytes,
        max_classes,
    )
