"""Inventory pages (the full fleet overview arrives with the console issue)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from partitions.models import Node


def node_list(request: HttpRequest) -> HttpResponse:
    """Every node → GPU → partition, emulated nodes labelled as such."""
    nodes = Node.objects.with_inventory()
    return render(request, "partitions/node_list.html", {"nodes": nodes})
