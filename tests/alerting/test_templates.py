"""The Go-template subset: values printed as Go prints them, Prometheus's humanize functions,
and every construct outside the subset refused when the file is read."""

from __future__ import annotations

import math

import pytest

from alerting.templates import Data, TemplateError, go_float, template_check, template_expand

DATA = Data({"instance": "a:1", "job": "api"}, {"cluster": "eu"}, "http://gf", 0.5)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0, "0"), (1.0, "1"), (0.5, "0.5"), (123456.0, "123456"), (1234567.0, "1.234567e+06"),
        (1e6, "1e+06"), (0.0001, "0.0001"), (0.00001, "1e-05"), (-2.5, "-2.5"),
        (math.nan, "NaN"), (math.inf, "+Inf"), (-math.inf, "-Inf"), (1.5e300, "1.5e+300"),
    ],
)  # fmt: skip
def test_values_print_as_go_prints_a_float(value, text):
    assert go_float(value) == text


@pytest.mark.parametrize(
    ("template", "text"),
    [
        ("{{ $labels.instance }}/{{ .Labels.job }}", "a:1/api"),
        ("{{ $value }} {{ .Value }}", "0.5 0.5"),
        ("{{ $externalLabels.cluster }} {{ $externalURL }}", "eu http://gf"),
        ("[{{ $labels.missing }}]", "[]"),
        ("{{ humanize 1234567 }} {{ humanize 0.00042 }} {{ humanize 0 }}", "1.235M 420u 0"),
        ("{{ humanize1024 2048 }} {{ humanizePercentage 0.1234 }}", "2ki 12.34%"),
        ("{{ humanizeDuration 3725 }} {{ humanizeDuration 0.25 }}", "1h 2m 5s 250ms"),
        ('{{ printf "%.2f%%" 12.345 }} {{ $value | printf "%v" }}', "12.35% 0.5"),
        ("{{ $labels.job | toUpper }}", "API"),
        ("a {{- $labels.job -}} b", "aapib"),
        ("{{/* a comment */}}x", "x"),
        ("{{ $labels }}", "map[instance:a:1 job:api]"),
        ("{{ humanize \"abc\" }}", "<error expanding template: can't convert 'abc' to float>"),
    ],
)  # fmt: skip
def test_templates_render_as_prometheus_renders_them(template, text):
    template_check(template)
    assert template_expand(template, DATA) == text


@pytest.mark.parametrize(
    ("template", "word"),
    [
        ("{{ if $value }}x{{ end }}", "{{if}}"),
        ("{{ range $labels }}x{{ end }}", "{{range}}"),
        ("{{ $x := 1 }}", "assignment"),
        ("{{ query \"up\" }}", "query"),
        ("{{ (humanize $value) }}", "parenthesised"),
        ("{{ $value", "unclosed"),
        ("{{ $nope }}", "undefined variable"),
        ("{{ }}", "missing value"),
        ("{{ $value 1 }}", "non-function"),
    ],
)  # fmt: skip
def test_constructs_outside_the_subset_are_refused_naming_them(template, word):
    with pytest.raises(TemplateError, match=None) as caught:
        template_check(template)
    assert word in str(caught.value)
