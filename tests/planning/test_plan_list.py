"""The plans page: newest first, paginated, filtered (bad values answered inline), sorted, and
exported as CSV with the same filters."""

from __future__ import annotations

import csv
import io
import re

import pytest
from django.urls import reverse

from planning.models import Plan

pytestmark = pytest.mark.django_db


def make_plans(count: int, *, ok: bool = True, state: str = Plan.State.DRAFT, by=None) -> list[Plan]:  # type: ignore[no-untyped-def]
    return [Plan.objects.create(request={}, result={"ok": ok, "eta_s": 12.5}, fingerprint="f", state=state, created_by=by)
            for _ in range(count)]


def listed_ids(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<a href="/plans/(\d+)/">#\d+</a>', html)]


def test_the_page_lists_plans_newest_first_with_links_and_the_total(client, viewer):
    plans = make_plans(3, by=viewer)
    client.force_login(viewer)
    response = client.get(reverse("planning:plan-list"))
    assert response.status_code == 200
    html = response.content.decode()
    assert listed_ids(html) == [p.pk for p in reversed(plans)]
    assert "3 plans" in html
    assert "vera" in html
    assert '<a href="/plans/" aria-current="page">Plans</a>' in html  # in the navigation, current


def test_it_paginates_fifty_a_page(client, viewer):
    plans = make_plans(53)
    client.force_login(viewer)
    first = listed_ids(client.get(reverse("planning:plan-list")).content.decode())
    second_html = client.get(reverse("planning:plan-list"), {"page": 2}).content.decode()
    second = listed_ids(second_html)
    assert len(first) == 50 and len(second) == 3
    assert sorted(first + second) == sorted(p.pk for p in plans)
    assert "53 plans" in second_html
    assert "page 2 of 2" in second_html


def test_it_sorts_oldest_first_when_asked(client, viewer):
    plans = make_plans(3)
    client.force_login(viewer)
    html = client.get(reverse("planning:plan-list"), {"sort": "created"}).content.decode()
    assert listed_ids(html) == [p.pk for p in plans]


def test_it_filters_by_state_feasibility_and_who_asked(client, viewer, operator):
    draft_ok = make_plans(1, by=viewer)[0]
    infeasible = make_plans(1, ok=False, by=operator)[0]
    applied = make_plans(1, state=Plan.State.APPLIED, by=operator)[0]
    client.force_login(viewer)
    page = reverse("planning:plan-list")
    assert listed_ids(client.get(page, {"state": "applied"}).content.decode()) == [applied.pk]
    assert listed_ids(client.get(page, {"feasible": "no"}).content.decode()) == [infeasible.pk]
    assert set(listed_ids(client.get(page, {"feasible": "yes"}).content.decode())) == {draft_ok.pk, applied.pk}
    assert set(listed_ids(client.get(page, {"by": "otto"}).content.decode())) == {infeasible.pk, applied.pk}
    assert listed_ids(client.get(page, {"by": "otto", "state": "draft"}).content.decode()) == [infeasible.pk]


@pytest.mark.parametrize("params, message", [
    ({"state": "exploded"}, "Select a valid choice"),
    ({"feasible": "maybe"}, "Select a valid choice"),
    ({"sort": "name"}, "Select a valid choice"),
    ({"by": "x" * 151}, "at most 150 characters"),
    ({"by": "bad\u202ename"}, "control characters"),
    ({"state": "x\u202ey"}, "Select a valid choice"),
])
def test_a_bad_filter_value_is_answered_inline(client, viewer, params, message):
    make_plans(2)
    client.force_login(viewer)
    response = client.get(reverse("planning:plan-list"), params)
    assert response.status_code == 400
    html = response.content.decode()
    assert message in html
    assert 'role="alert"' in html
    assert "\u202e" not in html  # the refused value is shown with its controls visible, not acting
    assert listed_ids(html) == []


def test_a_bad_page_number_shows_the_last_page_rather_than_failing(client, viewer):
    make_plans(2)
    client.force_login(viewer)
    assert len(listed_ids(client.get(reverse("planning:plan-list"), {"page": "999"}).content.decode())) == 2
    assert len(listed_ids(client.get(reverse("planning:plan-list"), {"page": "x"}).content.decode())) == 2


def test_the_query_count_does_not_grow_with_the_plans(client, viewer, operator, django_assert_max_num_queries):
    make_plans(3, by=operator)
    client.force_login(viewer)
    with django_assert_max_num_queries(15) as few:  # session, user, roles, count, page (and the header's)
        client.get(reverse("planning:plan-list"))
    make_plans(40, by=operator)
    make_plans(10, by=viewer)
    with django_assert_max_num_queries(len(few.captured_queries)):
        html = client.get(reverse("planning:plan-list")).content.decode()
    assert len(listed_ids(html)) == 50


def test_a_viewer_sees_the_page_and_a_user_without_a_role_does_not(client, viewer, norole):
    client.force_login(norole)
    assert client.get(reverse("planning:plan-list")).status_code == 403
    client.force_login(viewer)
    assert client.get(reverse("planning:plan-list")).status_code == 200


# --- CSV -----------------------------------------------------------------------------------------

def read_csv(response) -> list[list[str]]:  # type: ignore[no-untyped-def]
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_csv_export_has_a_header_and_every_matching_plan(client, viewer, operator):
    make_plans(2, by=viewer)
    wanted = make_plans(52, state=Plan.State.APPLIED, by=operator)
    client.force_login(viewer)
    response = client.get(reverse("planning:plan-list"), {"format": "csv", "state": "applied"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = read_csv(response)
    assert rows[0] == ["id", "created_at", "requested_by", "state", "feasible", "eta_s", "applied_at", "url"]
    assert [int(r[0]) for r in rows[1:]] == [p.pk for p in reversed(wanted)]  # all of them, not one page
    assert rows[1][2:6] == ["otto", "applied", "yes", "12.5"]
    assert rows[1][7] == f"http://testserver/plans/{wanted[-1].pk}/"


def test_csv_cells_cannot_become_formulas(client, viewer, django_user_model):
    names = ["=HYPERLINK(1)", "+cmd", "-2+3", "@SUM(A1)"]
    for name in names:
        make_plans(1, by=django_user_model.objects.create_user(username=name))
    client.force_login(viewer)
    rows = read_csv(client.get(reverse("planning:plan-list"), {"format": "csv", "sort": "created"}))
    assert [r[2] for r in rows[1:]] == ["'" + name for name in names]


def test_csv_with_a_bad_filter_is_a_400_not_a_file(client, viewer):
    client.force_login(viewer)
    response = client.get(reverse("planning:plan-list"), {"format": "csv", "state": "nope"})
    assert response.status_code == 400
    assert not response.get("Content-Disposition")


def test_csv_export_query_count_does_not_grow_with_the_plans(client, viewer, operator, django_assert_max_num_queries):
    make_plans(2, by=operator)
    client.force_login(viewer)
    with django_assert_max_num_queries(8) as few:
        read_csv(client.get(reverse("planning:plan-list"), {"format": "csv"}))
    make_plans(60, by=operator)
    with django_assert_max_num_queries(len(few.captured_queries)):
        rows = read_csv(client.get(reverse("planning:plan-list"), {"format": "csv"}))
    assert len(rows) == 63
