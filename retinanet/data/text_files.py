"""Reading annotation text files so that every problem is a ``UserError`` naming file and line."""
import csv
import json
from typing import Iterator

from retinanet.errors import UserError


def read_csv_rows(path: str, delimiter: str = ",") -> "Iterator[tuple[int, list[str]]]":
    """(line number, fields) of every non-blank row of a UTF-8 csv file.

    Accepted as spreadsheets and editors write them: a byte-order mark, CRLF or LF line ends,
    and blank rows anywhere (empty, spaces only or separators only, as spreadsheets leave
    after the last row), which are skipped. The line number is the physical line where the row
    ends, so quoted fields with newlines still point at the right place. Undecodable bytes and
    csv syntax errors are ``UserError``s.
    """
    line = 0
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            for row in reader:
                line = reader.line_num
                if row and (row[0].strip() or any(field.strip() for field in row)):
                    yield line, row
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not a UTF-8 text file ({error.reason})") from None
    except csv.Error as error:
        raise UserError(f"{path}:{line + 1}: {error}") from None


def read_text_lines(path: str) -> "Iterator[tuple[int, str]]":
    """(line number, text) of every line of a UTF-8 text file; undecodable bytes are a ``UserError``."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            yield from enumerate(handle, start=1)
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not a UTF-8 text file ({error.reason})") from None


def load_json(path: str):
    """Parse a UTF-8 JSON file (a byte-order mark is allowed); a syntax error is a ``UserError`` with its line."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise UserError(f"{path}:{error.lineno}: invalid JSON ({error.msg}, column {error.colno})") from None
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not a UTF-8 text file ({error.reason})") from None
