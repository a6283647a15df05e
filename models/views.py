"""Catalog pages: searchable model list with the fit matrix, and a model's detail."""

from __future__ import annotations

from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from models.charts import fit_matrix
from models.models import InferenceModel, ModelProfile, Precision
from models.services import default_profiles
from partitions.geometry import GPU_MODELS, SPECS


def model_list(request: HttpRequest) -> HttpResponse:
    """Every model with, per precision, the smallest partition mode that holds it on the
    chosen GPU model (default profiles: 8192 tokens or the model's max context, 1 sequence)."""
    query = request.GET.get("q", "").strip()[:100]
    gpu = request.GET.get("gpu", "MI300X")
    if gpu not in SPECS:
        gpu = "MI300X"
    models = InferenceModel.objects.all()
    if query:
        models = models.filter(
            Q(hf_id__icontains=query) | Q(name__icontains=query) | Q(vendor__icontains=query) | Q(family__icontains=query)
        )
    model_list = list(models)
    profiles = list(ModelProfile.objects.filter(default_profiles(), model__in=model_list, gpu_model=gpu).select_related("precision"))
    precisions = list(Precision.objects.all())
    profile_ids = {(p.model_id, p.precision.code): p.pk for p in profiles}
    matrix = fit_matrix(model_list, precisions, profiles, SPECS[gpu])
    return render(
        request,
        "catalog/model_list.html",
        {
            "query": query,
            "gpu": gpu,
            "gpu_models": GPU_MODELS,
            "spec": SPECS[gpu],
            "precisions": precisions,
            # Each cell with the id of its profile, for its "Deploy" link (None: not offered).
            "rows": [{"row": row, "cells": [(cell, profile_ids.get((row.model.pk, cell.precision))) for cell in row.cells]}
                     for row in matrix],
            "total_models": InferenceModel.objects.count(),
            "can_deploy": request.user.has_perm("serving.add_deployment"),
        },
    )


def model_detail(request: HttpRequest, pk: int) -> HttpResponse:
    model = get_object_or_404(InferenceModel, pk=pk)
    profiles = model.profiles.with_related().order_by("precision__sort_order", "gpu_model", "context_tokens")
    return render(
        request,
        "catalog/model_detail.html",
        {"model": model, "profiles": profiles, "specs": SPECS, "can_deploy": request.user.has_perm("serving.add_deployment")},
    )
