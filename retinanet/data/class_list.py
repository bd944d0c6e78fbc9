"""Class lists: the ``name,id`` csv every dataset and checkpoint is labelled with, and its txt source."""
import csv
import os
from typing import Sequence

from retinanet.data.text_files import read_csv_rows, read_text_lines
from retinanet.errors import UserError
from retinanet.io_utils import atomic_open

# Reserved annotation class for ignore regions (see CSVDataset); never a real class.
IGNORE_CLASS = "__ignore__"


def _check_name(name: str, where: str) -> None:
    if not name:
        raise UserError(f"{where}: empty class name")
    if name == IGNORE_CLASS or name.startswith(IGNORE_CLASS + ":"):
        raise UserError(f"{where}: {name!r} is reserved for ignore regions and cannot be a class")


def read_class_list(path: "str | os.PathLike") -> "list[str]":
    """Read a ``name,id`` class csv; return the names ordered by id.

    Ids must be the integers 0..K-1, each exactly once, and names unique; rows may be
    in any order. Blank lines are allowed. Any other problem is a ``UserError``
    naming the file and line.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"{path}: class list not found")
    names_by_id: "dict[int, str]" = {}
    line_by_name: "dict[str, int]" = {}
    line_by_id: "dict[int, int]" = {}
    for line, row in read_csv_rows(path):
        where = f"{path}:{line}"
        if len(row) != 2:
            raise UserError(f"{where}: expected 2 fields 'class_name,id', got {len(row)}: {row!r}")
        name, id_text = row[0].strip(), row[1].strip()
        _check_name(name, where)
        try:
            class_id = int(id_text)
        except ValueError:
            raise UserError(f"{where}: class id {id_text!r} is not an integer") from None
        if name in line_by_name:
            raise UserError(f"{where}: duplicate class name {name!r} (first on line {line_by_name[name]})")
        if class_id in line_by_id:
            raise UserError(f"{where}: duplicate class id {class_id} (first on line {line_by_id[class_id]})")
        line_by_name[name] = line
        line_by_id[class_id] = line
        names_by_id[class_id] = name
    if not names_by_id:
        raise UserError(f"{path}: class list is empty")
    expected = set(range(len(names_by_id)))
    if set(names_by_id) != expected:
        bad = min(set(names_by_id) - expected)
        missing = sorted(expected - set(names_by_id))
        raise UserError(
            f"{path}:{line_by_id[bad]}: class id {bad} out of range; ids must be 0..{len(names_by_id) - 1} "
            f"with none missing (missing: {', '.join(map(str, missing))})"
        )
    return [names_by_id[i] for i in range(len(names_by_id))]


def read_class_names_txt(path: "str | os.PathLike") -> "list[str]":
    """Read one class name per line (the ``class_names/*.txt`` format).

    Surrounding spaces and blank lines are ignored; a duplicate name is a ``UserError``
    that gives both line numbers.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"{path}: class names file not found")
    names: "list[str]" = []
    line_by_name: "dict[str, int]" = {}
    for line, text in read_text_lines(path):
        name = text.strip()
        if not name:
            continue
        _check_name(name, f"{path}:{line}")
        if name in line_by_name:
            raise UserError(
                f"{path}:{line}: duplicate class name {name!r} (first on line {line_by_name[name]})"
            )
        line_by_name[name] = line
        names.append(name)
    if not names:
        raise UserError(f"{path}: no class names")
    return names


def check_class_names(names: Sequence[str]) -> "list[str]":
    """``names`` as a list, checked to be a usable class list: non-empty, unique, none reserved."""
    names = list(names)
    if not names:
        raise UserError("the class list is empty")
    seen: "set[str]" = set()
    for index, name in enumerate(names):
        _check_name(name, f"class {index}")
        if name in seen:
            raise UserError(f"class {index}: duplicate class name {name!r}")
        seen.add(name)
    return names


def write_class_list(path: "str | os.PathLike", names: Sequence[str]) -> None:
    """Write ``names`` as a ``name,id`` csv (id = position), atomically."""
    names = check_class_names(names)
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\n").writerows((name, index) for index, name in enumerate(names))
