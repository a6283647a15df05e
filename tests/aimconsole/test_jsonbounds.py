"""The bounded JSON loader: size and nesting are checked before parsing, so deep nesting is a
clear ValueError instead of RecursionError; and the API's default parser uses it."""

from __future__ import annotations

import json

import pytest

from aimconsole.jsonbounds import JSONBoundsError, JSONTooDeep, JSONTooLarge, loads


@pytest.mark.parametrize("depth", [1_000, 10_000, 100_000])
@pytest.mark.parametrize("opener, closer", [("[", "]"), ('{"a":', "}")])
def test_deep_nesting_is_refused_with_a_clear_error(depth, opener, closer):
    with pytest.raises(JSONTooDeep, match="deeper than 32 levels"):
        loads(opener * depth + "1" + closer * depth, max_depth=32, max_bytes=10_000_000)


def test_unbalanced_deep_nesting_is_refused_too():
    with pytest.raises(JSONTooDeep):
        loads("[" * 100_000, max_depth=32, max_bytes=10_000_000)


def test_nesting_up_to_the_limit_parses():
    assert loads("[" * 32 + "]" * 32, max_depth=32, max_bytes=1000) == json.loads("[" * 32 + "]" * 32)


def test_brackets_inside_strings_do_not_count():
    text = json.dumps({"outputs": ["[[[[[[[[[[" * 100, '{"a": "\\" [[[["}']})
    assert loads(text, max_depth=3, max_bytes=100_000)["outputs"][1] == '{"a": "\\" [[[["}'


def test_size_is_checked_in_bytes_before_parsing():
    with pytest.raises(JSONTooLarge, match="1000 bytes"):
        loads('"' + "é" * 600 + '"', max_depth=32, max_bytes=1000)  # 600 characters, 1202 bytes
    with pytest.raises(JSONTooLarge):
        loads(b"[" + b"1," * 1000 + b"1]", max_depth=32, max_bytes=1000)


def test_the_errors_are_value_errors_with_the_limits_in_them():
    assert issubclass(JSONBoundsError, ValueError)
    with pytest.raises(ValueError):
        loads("[" * 50 + "]" * 50, max_depth=10, max_bytes=1000)


@pytest.mark.parametrize("text", ["{not json", "NaN", "[Infinity]", b"\xff\xfe"])
def test_invalid_json_is_a_value_error(text):
    with pytest.raises(ValueError):
        loads(text, max_depth=32, max_bytes=1000)


def test_big_integers_and_unicode_parse_as_the_standard_library_does():
    text = '{"n": 99999999999999999999, "s": "ünïcødé"}'
    assert loads(text, max_depth=32, max_bytes=1000) == json.loads(text)


# --- the API's parser -----------------------------------------------------------------------------

@pytest.mark.django_db
@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_a_deeply_nested_body_gets_400_from_any_endpoint(api_client_for, viewer, depth):
    from aimconsole.models import ApiToken

    body = '{"name": "x", "scopes": ' + "[" * depth + "]" * depth + "}"
    response = api_client_for(viewer).generic("POST", "/api/v1/tokens/", body, content_type="application/json")
    assert response.status_code == 400
    assert "deeper than" in response.json()["message"]
    assert not ApiToken.objects.exists()
