"""A class roster from CSV: who the students of a course are. Pure: bytes in, students out.

Decides what a roster file may look like and says precisely where one is wrong; it does not
touch the ledger (the CLI validates a whole roster first, then writes it in one transaction).

The format, as an instructor exports it from a spreadsheet or the university's LMS:

- UTF-8, with or without a byte-order mark; comma-separated; at most `MAX_BYTES`.
- A header row first, naming the columns: `username` is required, `name` and `email` are
  optional, any other column (a student number, a tutorial group) is ignored. Column names are
  matched without regard to case or surrounding spaces.
- One student per row, at most `MAX_STUDENTS`. Blank lines (and rows whose cells are all empty,
  as spreadsheets write them) are ignored.
- User names are what students log in to the hub with: letters, digits and `. _ @ -`, at most
  100 characters. They are lowercased, because JupyterHub lowercases user names at login; a name
  that appears twice (in any case) is an error, not a silent merge.

Every problem is a `RosterError` naming the file and the line, e.g.
"roster.csv, line 7: user name 'li wei' may contain only letters, digits and . _ @ -."
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

from slicehub.common.names import USERNAME

MAX_STUDENTS = 5000
MAX_BYTES = 5 * 1024 * 1024  # 5,000 rows of name and e-mail fit in well under 1 MiB
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_OTHER_DELIMITERS = {";": "semicolons", "\t": "tabs", "|": "vertical bars"}
MAX_NAME = 200
# words that show a first row is a header, even one without a `username` column
_HEADER_WORDS = {"name", "email", "e-mail", "user", "user name", "user_name", "login", "id"}


class RosterError(ValueError):
    """A roster the CLI refuses; `line` is the 1-based line of the file (None: the whole file)."""

    def __init__(self, source: str, line: int | None, what: str):
        where = f"{source}, line {line}" if line is not None else source
        super().__init__(f"{where}: {what}.")
        self.source = source
        self.line = line


@dataclass(frozen=True)
class Student:
    line: int
    username: str
    name: str = ""
    email: str = ""


@dataclass(frozen=True)
class Roster:
    source: str
    students: tuple[Student, ...]

    @property
    def usernames(self) -> list[str]:
        return [s.username for s in self.students]


def normalise_username(raw: str) -> str:
    """The user name the hub will see: stripped and lowercased. Raises ValueError if invalid."""
    name = raw.strip().lower()
    if not name:
        raise ValueError("the user name is empty")
    if len(name) > 100:
        raise ValueError(f"user name {raw.strip()[:20]!r}… is longer than 100 characters")
    if not USERNAME.fullmatch(name):  # the ledger's rule, on the lowercased name
        raise ValueError(f"user name {raw.strip()!r} may contain only letters, digits and . _ @ -")
    return name


def read_roster(path: str | Path) -> Roster:
    """Read and check the roster at `path` (see the module docstring for the format)."""
    path = Path(path)
    source = path.name or str(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise RosterError(str(path), None, "no such file") from None
    except IsADirectoryError:
        raise RosterError(str(path), None, "is a folder, not a CSV file") from None
    except OSError as e:
        raise RosterError(str(path), None, f"cannot be read ({e.strerror})") from None
    return parse_roster(data, source)


def parse_roster(data: bytes, source: str = "roster") -> Roster:
    """Parse roster bytes; every problem is a RosterError with the line it is on."""
    if len(data) > MAX_BYTES:
        raise RosterError(
            source, None, f"is larger than {MAX_BYTES // (1024 * 1024)} MiB; is it a roster?"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise RosterError(
            source, line, "is not UTF-8 text; save the file as 'CSV UTF-8' and try again"
        ) from None
    if not text.strip(" \t\r\n,"):
        raise RosterError(source, None, "is empty; it needs a header row and one row per student")
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise RosterError(source, line, "contains a NUL character; is it a spreadsheet file?")

    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    columns, header_line = _header(reader, source)
    at = {name: i for i, name in enumerate(columns)}
    students: list[Student] = []
    seen: dict[str, int] = {}
    for row in _rows(reader, source):
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(columns) and any(c.strip() for c in row[len(columns) :]):
            raise RosterError(
                source,
                line,
                f"has {len(row)} fields but the header names {len(columns)}; "
                "is there an unquoted comma in a name?",
            )
        if len(students) == MAX_STUDENTS:
            raise RosterError(
                source, line, f"is past the limit of {MAX_STUDENTS} students in one roster"
            )
        cells = row + [""] * (len(columns) - len(row))
        raw = cells[at["username"]]
        try:
            username = normalise_username(raw)
        except ValueError as e:
            if any(d in raw for d in _OTHER_DELIMITERS):
                raise RosterError(source, line, _delimiter_hint(raw)) from None
            raise RosterError(source, line, str(e)) from None
        if username in seen:
            raise RosterError(
                source,
                line,
                f"user name {username!r} is listed twice (first on line {seen[username]})",
            )
        seen[username] = line
        name = cells[at["name"]].strip() if "name" in at else ""
        email = cells[at["email"]].strip() if "email" in at else ""
        if len(name) > MAX_NAME:
            raise RosterError(source, line, f"the name is longer than {MAX_NAME} characters")
        if email and not EMAIL.match(email):
            raise RosterError(source, line, f"{email!r} is not an e-mail address")
        students.append(Student(line, username, name, email))
    if not students:
        raise RosterError(
            source, None, f"has a header row (line {header_line}) but no students under it"
        )
    return Roster(source, tuple(students))


def _header(reader, source: str) -> tuple[list[str], int]:
    """The first non-blank row, which must name the columns."""
    for row in _rows(reader, source):
        if not any(cell.strip() for cell in row):
            continue
        line = reader.line_num
        columns = [cell.strip().lower() for cell in row]
        if len(columns) == 1 and any(d in row[0] for d in _OTHER_DELIMITERS):
            raise RosterError(source, line, _delimiter_hint(row[0]))
        if "username" not in columns:
            first = row[0].strip()
            headerish = any(c in _HEADER_WORDS for c in columns)
            if not headerish and (USERNAME.fullmatch(first.lower()) or any("@" in c for c in row)):
                raise RosterError(
                    source,
                    line,
                    f"the header row is missing: the first line starts with {first!r}, not "
                    "column names; add a first line such as 'username,name,email'",
                )
            raise RosterError(
                source,
                line,
                "the header row has no 'username' column (it has "
                + ", ".join(repr(c) for c in columns)
                + ")",
            )
        seen = set()
        for c in columns:
            if c and c in seen:
                raise RosterError(source, line, f"the header names the column {c!r} twice")
            seen.add(c)
        return columns, line
    raise RosterError(source, None, "is empty; it needs a header row and one row per student")


def _rows(reader, source: str):
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise RosterError(source, reader.line_num, f"is not valid CSV ({e})") from None


def _delimiter_hint(cell: str) -> str:
    used = next(d for d in _OTHER_DELIMITERS if d in cell)
    return (
        f"the columns are separated by {_OTHER_DELIMITERS[used]}, not commas; "
        "export the roster as 'CSV (comma delimited)'"
    )
