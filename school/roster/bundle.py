"""Reading what a school hands over: a OneRoster zip, a folder, or the simple CSV, one row at a time.

Every row comes with its file name and line number, so each problem can name where it is. Files
are read as UTF-8 (a byte order mark is allowed and dropped); anything else is refused with the
file and line where the bytes stop being UTF-8.
"""
import codecs
import csv
import io
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from email_validator import EmailNotValidError, validate_email

MAX_PROBLEMS_KEPT = 500

# The common, plainly valid address, checked without the full validator (which costs ~40 µs each).
_PLAIN_EMAIL = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*")


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file} line {self.line}" if self.line else self.file
        return f"{where}: {self.message}"

    def to_json(self) -> dict:
        return {"file": self.file, "line": self.line, "message": self.message}


class BundleError(ValueError):
    """The whole import is refused; ``problems`` says why, each with its file and line."""

    def __init__(self, problems: list[Problem]):
        super().__init__("; ".join(map(str, problems[:5])))
        self.problems = problems


@dataclass
class Problems:
    """Every problem found, the first ``MAX_PROBLEMS_KEPT`` kept word for word."""

    kept: list[Problem] = field(default_factory=list)
    total: int = 0

    def add(self, file: str, line: int | None, message: str) -> None:
        self.total += 1
        if len(self.kept) < MAX_PROBLEMS_KEPT:
            self.kept.append(Problem(file, line, message))


def check_email(value: str) -> tuple[str | None, str | None]:
    """``(email, None)`` for a usable address, ``(None, value)`` for one that needs fixing."""
    value = value.strip()
    if not value:
        return None, None
    if len(value) <= 254 and _PLAIN_EMAIL.fullmatch(value) and len(value.partition("@")[0]) <= 64:
        return value, None
    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        return None, value[:254]
    return value, None


def check_language(value: str) -> str | None:
    """A BCP 47 tag such as ``es`` or ``zh-Hans``, or None when absent or malformed."""
    value = value.strip()
    return value if value and len(value) <= 35 and _LANGUAGE.fullmatch(value) else None


class Bundle:
    """A folder or a zip archive of CSV files, opened by name (case-insensitive)."""

    def __init__(self, path: Path):
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        self._names: dict[str, str] = {}

    def __enter__(self) -> "Bundle":
        if self.path.is_dir():
            self._names = {p.name.lower(): p.name for p in self.path.iterdir() if p.is_file()}
        elif self.path.suffix.lower() == ".csv" and self.path.is_file():
            # One spreadsheet of students: the simple CSV without a teachers file.
            self._names = {"students.csv": self.path.name}
            self.path = self.path.parent
        elif self.path.is_file():
            try:
                self._zip = zipfile.ZipFile(self.path)
                bad = self._zip.testzip()
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
                raise BundleError([Problem(self.path.name, None, f"not a readable zip archive ({exc})")]) from None
            if bad is not None:
                raise BundleError([Problem(self.path.name, None, f"the zip archive is damaged at {bad}")])
            # A bundle zipped with its folder puts the files one level down; take them by base name.
            self._names = {Path(n).name.lower(): n for n in self._zip.namelist() if not n.endswith("/")}
        else:
            raise BundleError([Problem(str(self.path), None, "no such file or folder")])
        return self

    def __exit__(self, *exc) -> None:
        if self._zip is not None:
            self._zip.close()

    def has(self, name: str) -> bool:
        return name.lower() in self._names

    def names(self) -> list[str]:
        return sorted(self._names.values())

    @contextmanager
    def _binary(self, name: str):
        stored = self._names[name.lower()]
        if self._zip is not None:
            with self._zip.open(stored) as handle:
                yield handle
        else:
            with open(self.path / stored, "rb") as handle:
                yield handle

    def rows(self, name: str, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
        """``(line, row)`` for each data row; raises ``BundleError`` on a missing column or bad bytes."""
        file = Path(name).name
        try:
            with self._binary(name) as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text:
                yield from read_csv(text, file, required)
        except UnicodeDecodeError:
            # Decoding runs ahead of the rows by a buffer; read again line by line to say which line.
            with self._binary(name) as raw:
                raise BundleError([Problem(file, _first_bad_line(raw), "the file is not UTF-8 text; "
                                                                       "export it again as CSV UTF-8")]) from None


def _first_bad_line(raw) -> int | None:
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    for number, chunk in enumerate(raw, start=1):
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError:
            return number
    return None


def read_csv(text, file: str, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        raise BundleError([Problem(file, 1, "the file is empty (it needs a header row)")]) from None
    except csv.Error as exc:
        raise BundleError([Problem(file, 1, f"not a CSV file ({exc})")]) from None
    header = [h.strip() for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise BundleError([Problem(file, 1, "missing required column: " + ", ".join(missing))])
    width = len(header)
    try:
        for values in reader:
            if not values or (len(values) == 1 and not values[0].strip()):
                continue  # a blank line
            if len(values) < width:
                values = values + [""] * (width - len(values))
            yield reader.line_num, dict(zip(header, values))
    except csv.Error as exc:
        raise BundleError([Problem(file, reader.line_num, f"broken CSV ({exc})")]) from None
