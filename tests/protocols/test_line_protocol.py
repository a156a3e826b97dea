"""The line-protocol parser and its mapping to points: every escape rule, every grammar error."""

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrics.points import NAME_RE, TAG_KEY_RE
from metrics.services import PointInput
from protocols.influx import body_text, lines_points
from protocols.line_protocol import (
    POINTS_MAX,
    Field,
    Line,
    LineSyntaxError,
    TooManyPoints,
    lines_parse,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
NOW_NS = int(NOW.timestamp()) * 10**9


def one(text, **kwargs) -> Line:
    lines = lines_parse(text, **kwargs)
    assert len(lines) == 1
    return lines[0]


def syntax_error(text, **kwargs) -> LineSyntaxError:
    with pytest.raises(LineSyntaxError) as caught:
        lines_parse(text, **kwargs)
    return caught.value


# --- the grammar: what parses, and to what ---------------------------------------------------


def test_a_full_line_parses_into_measurement_tags_fields_and_timestamp():
    line = one('cpu,host=a,region=eu usage=1.5,n=-2i,u=3u,up=true,s="ok" 1700000000000000000')
    assert line == Line(
        number=1,
        measurement="cpu",
        tags=(("host", "a"), ("region", "eu")),
        fields=(
            Field("usage", "float", 1.5),
            Field("n", "integer", -2),
            Field("u", "unsigned", 3),
            Field("up", "boolean", True),
            Field("s", "string", "ok"),
        ),
        timestamp=1700000000000000000,
    )


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("1", 1.0),
        ("-1", -1.0),
        ("1.", 1.0),
        ("1.5", 1.5),
        (".5", 0.5),
        ("-.5", -0.5),
        ("1e3", 1000.0),
        ("1E+3", 1000.0),
        ("1.5e-3", 0.0015),
        ("1.e2", 100.0),
        (".5e1", 5.0),
        ("-0", -0.0),
    ],
)
def test_float_forms(raw, value):
    assert one(f"m f={raw}").fields == (Field("f", "float", value),)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ("0i", Field("f", "integer", 0)),
        ("-9223372036854775808i", Field("f", "integer", -(2**63))),
        ("9223372036854775807i", Field("f", "integer", 2**63 - 1)),
        ("0u", Field("f", "unsigned", 0)),
        ("18446744073709551615u", Field("f", "unsigned", 2**64 - 1)),
    ],
)
def test_integers_at_their_int64_and_uint64_edges(raw, field):
    assert one(f"m f={raw}").fields == (field,)


@pytest.mark.parametrize(
    "raw", ["9223372036854775808i", "-9223372036854775809i", "18446744073709551616u", "1e400"]
)
def test_numbers_past_their_range_are_syntax_errors(raw):
    assert "out of range" in syntax_error(f"m f={raw}").detail


@pytest.mark.parametrize("raw", ["t", "T", "true", "True", "TRUE"])
def test_true_forms(raw):
    assert one(f"m f={raw}").fields == (Field("f", "boolean", True),)


@pytest.mark.parametrize("raw", ["f", "F", "false", "False", "FALSE"])
def test_false_forms(raw):
    assert one(f"m f={raw}").fields == (Field("f", "boolean", False),)


@pytest.mark.parametrize(
    "raw",
    ["tRUE", "yes", "1.2.3", "--1", "+1", "1x", "-1u", "1.5i", "NaN", "inf", "0x10", "1e", "."],
)
def test_values_outside_the_grammar_are_refused(raw):
    error = syntax_error(f"m f={raw}")
    assert "invalid value" in error.detail
    assert error.extra == {"line": 1}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Measurement: comma and space are escaped; any other backslash is literal.
        (r"my\ cpu\,x f=1", "my cpu,x"),
        (r"a\=b f=1", r"a\=b"),
        (r"a=b f=1", "a=b"),
        (r"a\b f=1", r"a\b"),
        (r"a\\b f=1", r"a\\b"),
        (r"a\\,b f=1", r"a\,b"),
        (r"a\\\ b f=1", r"a\\ b"),
        (r"\,start f=1", ",start"),
        (r"caf\é f=1", r"caf\é"),
        ("naïve f=1", "naïve"),
    ],
)
def test_measurement_escapes(raw, expected):
    assert one(raw).measurement == expected


@pytest.mark.parametrize(
    ("raw", "key", "value"),
    [
        (r"m,k\ 1=v\ 1 f=1", "k 1", "v 1"),
        (r"m,k\,1=v\,1 f=1", "k,1", "v,1"),
        (r"m,k\=1=v\=1 f=1", "k=1", "v=1"),
        (r"m,k\x=v\x f=1", r"k\x", r"v\x"),
        (r"m,k=a\\b f=1", "k", r"a\\b"),
        (r"m,k=a\\,b f=1", "k", r"a\,b"),
        (r"m,k=\"q\" f=1", "k", r"\"q\""),
        ('m,k="q" f=1', "k", '"q"'),
        ("m,k=ünï f=1", "k", "ünï"),
    ],
)
def test_tag_key_and_value_escapes(raw, key, value):
    assert one(raw).tags == ((key, value),)


@pytest.mark.parametrize(
    ("raw", "key"),
    [(r"m f\ 1=1", "f 1"), (r"m f\,1=1", "f,1"), (r"m f\=1=1", "f=1"), (r"m f\x=1", r"f\x")],
)
def test_field_key_escapes(raw, key):
    assert one(raw).fields[0].key == key


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (r'"plain"', "plain"),
        (r'""', ""),
        (r'"say \"hi\""', 'say "hi"'),
        (r'"back\\slash"', "back\\slash"),
        (r'"a\b"', r"a\b"),
        (r'"trailing\\"', "trailing\\"),
        (r'"a, b=c d"', "a, b=c d"),
        ('"two\nlines"', "two\nlines"),
        (r'"\\\""', '\\"'),
    ],
)
def test_string_field_escapes(raw, value):
    assert one(f"m s={raw}").fields == (Field("s", "string", value),)


def test_comments_blank_lines_crlf_and_surrounding_spaces_are_skipped_with_line_numbers_kept():
    text = "# a comment\r\n\r\n   \n  # indented comment\n  m f=1 5  \r\nm f=2\n\nm f=3\r"
    lines = lines_parse(text)
    assert [(line.number, line.fields[0].value, line.timestamp) for line in lines] == [
        (5, 1.0, 5),
        (6, 2.0, None),
        (8, 3.0, None),
    ]


def test_a_string_spanning_lines_counts_them():
    lines = lines_parse('m s="a\nb\nc" 1\nm f=2')
    assert [line.number for line in lines] == [1, 4]


def test_several_spaces_separate_sections():
    assert one("m,k=v   f=1    7").timestamp == 7


def test_a_tab_in_a_comment_is_allowed():
    assert lines_parse("#\ta comment\nm f=1")[0].number == 2


@pytest.mark.parametrize(
    ("precision", "raw", "ns"),
    [
        ("ns", "1", 1),
        ("n", "1", 1),
        ("us", "1", 1_000),
        ("u", "1", 1_000),
        ("ms", "1", 1_000_000),
        ("s", "1", 1_000_000_000),
        ("m", "1", 60_000_000_000),
        ("h", "1", 3_600_000_000_000),
        ("s", "-1", -1_000_000_000),
    ],
)
def test_precisions_scale_the_timestamp_to_nanoseconds(precision, raw, ns):
    assert one(f"m f=1 {raw}", precision=precision).timestamp == ns


def test_timestamps_at_the_int64_edge():
    assert one("m f=1 9223372036854775807").timestamp == 2**63 - 1
    assert "out of range" in syntax_error("m f=1 9223372036854775808").detail
    assert one("m f=1 9223372036", precision="s").timestamp == 9223372036 * 10**9
    assert "out of range" in syntax_error("m f=1 9223372037", precision="s").detail


# --- the grammar: every error, with its line -------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("m", "no fields"),
        ("m ", "no fields"),
        ("m,k=v", "no fields"),
        ("m,k=v  ", "no fields"),
        ("m f", "expected '=' after field key 'f'"),
        ("m f=", "field 'f' has no value"),
        ("m f=1,", "expected a field key"),
        ("m f=1,,g=2", "expected a field key"),
        ("m =1", "expected a field key"),
        ("m f=1 g=2", "invalid timestamp"),
        ("m f=1 1.5", "invalid timestamp"),
        ("m f=1 12a", "invalid timestamp"),
        ("m f=1 1 2", "unexpected text after the timestamp"),
        ("m f=abc", "invalid value 'abc'"),
        ('m f="open', "has no closing quote"),
        ('m f="open\\"', "has no closing quote"),
        ('m f="a"b', "expected ',' or a space after a field"),
        (",m f=1", "expected a measurement"),
        (" ,m f=1", "expected a measurement"),
        ("m,k f=1", "expected '=' after tag key 'k'"),
        ("m,=v f=1", "expected a tag key after ','"),
        ("m, f=1", "expected a tag key after ','"),
        ("m,k= f=1", "tag 'k' has no value"),
        ("m,k=v=w f=1", "expected a space before the fields, found '='"),
        ("m,k=v,k=w f=1", "tag key 'k' appears twice"),
        ("m f=1,f=2", "field key 'f' appears twice"),
        ("m\tx f=1", "control character U+0009"),
        ("m f\x01=1", "control character U+0001"),
        ("m,k=v\x7f f=1", "control character U+007F"),
        ("m\\", "backslash that escapes nothing"),
        ("m,k=v\\", "backslash that escapes nothing"),
        ("m f\\\t=1", "backslash that escapes nothing"),
        ("m f=1\rm f=2", "carriage return not followed by a newline"),
        ("#ok\n#bad\x02", "the comment holds the control character U+0002"),
    ],
)
def test_grammar_errors_name_the_problem(text, fragment):
    error = syntax_error(text)
    assert fragment in error.detail


def test_an_error_names_the_line_it_is_on_and_its_column():
    error = syntax_error("m f=1\n# note\n\nm f=2\nm f=x\nm f=3")
    assert error.line == 5
    assert error.extra == {"line": 5}
    assert error.detail.startswith("line 5: ")
    assert error.detail.endswith("at column 5")


def test_a_line_after_a_multiline_string_is_numbered_correctly_in_errors():
    assert syntax_error('m s="a\nb" 1\nm f=bad').line == 3


def test_invalid_utf8_is_a_syntax_error_on_its_line():
    with pytest.raises(LineSyntaxError) as caught:
        body_text(b"m f=1\nm,k=\xff f=1\n")
    assert caught.value.line == 2


def test_the_point_limit_counts_fields_and_holds_at_its_edge():
    fields = ",".join(f"f{i}=1" for i in range(10))
    lines = "\n".join(f"m {fields}" for _ in range(POINTS_MAX // 10))
    assert sum(len(line.fields) for line in lines_parse(lines)) == POINTS_MAX
    with pytest.raises(TooManyPoints):
        lines_parse(lines + "\nm f=1")


# --- points: the mapping and the service's rules ---------------------------------------------


def test_field_value_is_the_measurement_other_fields_are_measurement_dot_field():
    mapped = lines_points(lines_parse(f"cpu,host=a value=1,user=2i,idle=3u {NOW_NS}"), now=NOW)
    assert mapped.points == [
        PointInput("value", "cpu", 1.0, NOW, {"host": "a"}),
        PointInput("value", "cpu.user", 2.0, NOW, {"host": "a"}),
        PointInput("value", "cpu.idle", 3.0, NOW, {"host": "a"}),
    ]
    assert mapped.lines == [1, 1, 1]
    assert mapped.dropped == []


def test_a_line_without_timestamp_takes_the_arrival_time():
    assert lines_points(lines_parse("m f=1"), now=NOW).points[0].timestamp == NOW


def test_nanoseconds_become_microseconds():
    point = lines_points(lines_parse(f"m f=1 {NOW_NS + 1_234_567}"), now=NOW).points[0]
    assert point.timestamp == NOW + timedelta(microseconds=1234)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('m s="x"', "is a string; only numbers are stored"),
        ("m b=true", "is a boolean; only numbers are stored"),
        (r"my\ cpu f=1", "metric name 'my cpu.f' must be"),
        ("m,1bad=v f=1", "tags key '1bad' must match"),
        ("m,k=" + "v" * 192 + " f=1", "must be 1-191 characters, none of them a control character"),
        ("m," + ",".join(f"k{i}=v" for i in range(11)) + " f=1", "at most 10 tags"),
        ("m f=2e15", "must lie within ±1e15"),
        ("m f=2000000000000000i", "must lie within ±1e15"),
        (f"m f=1 {NOW_NS - 8 * 86400 * 10**9}", "older than the accepted window"),
        (f"m f=1 {NOW_NS + 8 * 86400 * 10**9}", "too far in the future"),
    ],
)
def test_points_outside_the_service_rules_are_dropped_with_a_reason(text, reason):
    mapped = lines_points(lines_parse(text), now=NOW)
    assert mapped.points == []
    assert len(mapped.dropped) == 1
    assert mapped.dropped[0].line == 1
    assert mapped.dropped[0].points == 1
    assert reason in mapped.dropped[0].reason


def test_one_refused_field_leaves_the_other_fields_of_its_line():
    mapped = lines_points(lines_parse('m a=1,s="x",b=2\nm c=3'), now=NOW)
    assert [p.name for p in mapped.points] == ["m.a", "m.b", "m.c"]
    assert [(d.line, d.points) for d in mapped.dropped] == [(1, 1)]


def test_ten_tags_pass_and_exactly_seven_days_old_passes():
    tags = ",".join(f"k{i}=v" for i in range(10))
    text = f"m,{tags} f=1 {NOW_NS - 7 * 86400 * 10**9}"
    assert len(lines_points(lines_parse(text), now=NOW).points) == 1


# --- properties ------------------------------------------------------------------------------

_printable = st.text(st.characters(codec="utf-8"), min_size=1, max_size=191).filter(
    lambda s: s.isprintable() and not s.endswith("\\")
)
_accepted_points = st.builds(
    PointInput,
    type=st.just("value"),
    name=st.from_regex(NAME_RE, fullmatch=True),
    value=st.floats(min_value=-1e15, max_value=1e15, allow_nan=False),
    timestamp=st.datetimes(
        min_value=(NOW - timedelta(days=7)).replace(tzinfo=None),
        max_value=(NOW + timedelta(days=7)).replace(tzinfo=None),
        timezones=st.just(UTC),
    ),
    tags=st.dictionaries(st.from_regex(TAG_KEY_RE, fullmatch=True), _printable, max_size=10),
)


def _escape(text: str, specials: str) -> str:
    for char in specials:
        text = text.replace(char, "\\" + char)
    return text


def render_point(point: PointInput) -> str:
    """A point as line protocol, as the InfluxDB client libraries write it."""
    tags = "".join(
        f",{_escape(k, ', =')}={_escape(v, ', =')}" for k, v in sorted(point.tags.items())
    )
    delta = point.timestamp - datetime(1970, 1, 1, tzinfo=UTC)
    ns = (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000
    return f"{_escape(point.name, ', ')}{tags} value={point.value!r} {ns}"


@settings(max_examples=300, deadline=None)
@given(_accepted_points)
def test_any_accepted_point_survives_line_protocol(point):
    mapped = lines_points(lines_parse(render_point(point)), now=NOW)
    assert mapped.dropped == []
    assert mapped.points == [point]
    assert math.copysign(1, mapped.points[0].value) == math.copysign(1, point.value)


_name_text = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cc"]), min_size=1, max_size=20
).filter(lambda s: not s.endswith("\\") and "\x7f" not in s)
_fields = st.one_of(
    st.builds(
        Field, st.just(""), st.just("float"), st.floats(allow_nan=False, allow_infinity=False)
    ),
    st.builds(Field, st.just(""), st.just("integer"), st.integers(-(2**63), 2**63 - 1)),
    st.builds(Field, st.just(""), st.just("unsigned"), st.integers(0, 2**64 - 1)),
    st.builds(Field, st.just(""), st.just("boolean"), st.booleans()),
    st.builds(Field, st.just(""), st.just("string"), st.text(max_size=30)),
)


def render_field(key: str, field: Field) -> str:
    value = field.value
    if field.kind == "float":
        text = repr(value)
    elif field.kind == "integer":
        text = f"{value}i"
    elif field.kind == "unsigned":
        text = f"{value}u"
    elif field.kind == "boolean":
        text = "true" if value else "false"
    else:
        text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{_escape(key, ', =')}={text}"


@settings(max_examples=300, deadline=None)
@given(
    measurement=_name_text.filter(lambda s: not s.startswith("#")),
    tags=st.dictionaries(_name_text, _name_text, max_size=4),
    fields=st.dictionaries(_name_text, _fields, min_size=1, max_size=4),
    timestamp=st.none() | st.integers(-(2**63), 2**63 - 1),
    newline=st.sampled_from(["\n", "\r\n"]),
)
def test_any_line_survives_rendering_and_parsing(measurement, tags, fields, timestamp, newline):
    text = _escape(measurement, ", ")
    text += "".join(f",{_escape(k, ', =')}={_escape(v, ', =')}" for k, v in tags.items())
    text += " " + ",".join(render_field(k, f) for k, f in fields.items())
    if timestamp is not None:
        text += f" {timestamp}"
    body = f"# header{newline}{newline}{text}{newline}"
    (line,) = lines_parse(body)
    assert line.number == 3
    assert line.measurement == measurement
    assert line.tags == tuple(tags.items())
    assert line.fields == tuple(Field(k, f.kind, f.value) for k, f in fields.items())
    assert line.timestamp == timestamp
