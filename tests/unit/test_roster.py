"""Class rosters from CSV: what is accepted, and a precise error (file, line, what) otherwise."""

import pytest

from slicehub.quota.roster import MAX_BYTES, MAX_STUDENTS, RosterError, parse_roster, read_roster


def roster(text: str | bytes):
    return parse_roster(text.encode() if isinstance(text, str) else text, "class.csv")


def test_header_and_students_with_optional_columns():
    r = roster("username,name,email\nchan01,Chan Tai Man,chan@example.edu\nlee02,,\n")
    assert r.usernames == ["chan01", "lee02"]
    assert r.students[0].name == "Chan Tai Man"
    assert r.students[0].email == "chan@example.edu"
    assert r.students[0].line == 2 and r.students[1].line == 3
    assert r.students[1].name == "" and r.students[1].email == ""


def test_bom_crlf_blank_lines_and_empty_rows_are_accepted():
    data = b"\xef\xbb\xbfusername,name\r\n\r\nchan01,Chan\r\n,\r\n   \r\nlee02,Lee\r\n\r\n"
    r = roster(data)
    assert r.usernames == ["chan01", "lee02"]
    assert [s.line for s in r.students] == [3, 6]


def test_header_matching_ignores_case_spaces_and_order_and_extra_columns():
    r = roster(" Email , Student No, USERNAME \nwong@example.edu,2026001,Wong03\n")
    assert r.usernames == ["wong03"]  # lowercased, as JupyterHub sees it at login
    assert r.students[0].email == "wong@example.edu"


def test_username_only_roster_and_quoted_names_with_commas():
    assert roster("username\nchan01\n").usernames == ["chan01"]
    r = roster('username,name\nchan01,"Chan, Tai Man"\n')
    assert r.students[0].name == "Chan, Tai Man"


def test_a_roster_of_exactly_the_limit_is_accepted():
    body = "".join(f"s{i:05d}\n" for i in range(MAX_STUDENTS))
    assert len(roster("username\n" + body).students) == MAX_STUDENTS


@pytest.mark.parametrize(
    "data, line, words",
    [
        (b"", None, "is empty"),
        (b"\n\n  \n", None, "is empty"),
        (b",,\n,,\n", None, "is empty"),
        (b"username,name\n\n", None, "no students"),
        (b"chan01,Chan\nlee02,Lee\n", 1, "header row is missing"),
        (b"user,name\nchan01,Chan\n", 1, "no 'username' column"),
        (b"username,name,Name\nchan01,a,b\n", 1, "column 'name' twice"),
        (b"username;name;email\nchan01;Chan;c@x.org\n", 1, "separated by semicolons"),
        (b"username\tname\nchan01\tChan\n", 1, "separated by tabs"),
        (b"username,name\nchan01;Chan\n", 2, "separated by semicolons"),
        (b"username\nchan01\nlee02\nchan01\n", 4, "listed twice (first on line 2)"),
        (b"username\nChan01\n\nCHAN01\n", 4, "listed twice (first on line 2)"),
        (b"username\nchan 01\n", 2, "may contain only letters, digits"),
        (b"username\nchan01\n<script>\n", 3, "may contain only letters, digits"),
        (b"username,name\n,Nobody\n", 2, "the user name is empty"),
        (b"username\n" + b"x" * 101 + b"\n", 2, "longer than 100 characters"),
        (b"username,name\nchan01,Chan,Tai,Man\n", 2, "has 4 fields but the header names 2"),
        (b"username,email\nchan01,not-an-address\n", 2, "is not an e-mail address"),
        (b"username,name\nchan01," + b"n" * 201 + b"\n", 2, "longer than 200 characters"),
        (b"username,name\nchan01,Chan\nlee02,L\xe9e\n", 3, "not UTF-8"),
        (b"username\nchan01\nlee\x0002\n", 3, "NUL character"),
        (b'username,name\nchan01,"Chan\nlee02,Lee\n', 3, "not valid CSV"),
    ],
)
def test_malformed_rosters_say_where_and_what(data, line, words):
    with pytest.raises(RosterError) as e:
        roster(data)
    assert e.value.line == line
    assert words in str(e.value)
    where = f"class.csv, line {line}:" if line else "class.csv:"
    assert str(e.value).startswith(where)
    assert str(e.value).endswith(".") and "\n" not in str(e.value)


def test_more_than_the_limit_names_the_first_line_past_it():
    body = "".join(f"s{i:05d}\n" for i in range(MAX_STUDENTS + 3))
    with pytest.raises(RosterError) as e:
        roster("username\n" + body)
    assert e.value.line == MAX_STUDENTS + 2  # header on line 1, students from line 2
    assert f"limit of {MAX_STUDENTS} students" in str(e.value)


def test_a_file_too_large_to_be_a_roster_is_refused_before_parsing():
    with pytest.raises(RosterError, match="larger than 5 MiB"):
        roster(b"username\n" + b"a" * MAX_BYTES)


def test_read_roster_from_disk(tmp_path):
    path = tmp_path / "ml101.csv"
    path.write_bytes(b"\xef\xbb\xbfusername\nchan01\n")
    r = read_roster(path)
    assert r.source == "ml101.csv" and r.usernames == ["chan01"]
    with pytest.raises(RosterError, match="no such file"):
        read_roster(tmp_path / "missing.csv")
    with pytest.raises(RosterError, match="is a folder"):
        read_roster(tmp_path)
