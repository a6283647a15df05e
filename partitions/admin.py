"""Django admin for the inventory. Hardware-derived fields are read-only (the sync writes them)."""

from __future__ import annotations

from django.contrib import admin

from aimconsole.admin import AuditedModelAdmin
from partitions.models import GPU, Node, Partition

_HARDWARE_GPU_FIELDS = (
    "node", "index", "gpu_model", "market_name", "bdf", "uuid", "gfx_target", "compute_mode",
    "memory_mode", "memory_caps", "accelerator_profiles", "compute_units", "vram_mb",
)


class GPUInline(admin.TabularInline):
    model = GPU
    fields = ("index", "gpu_model", "compute_mode", "memory_mode", "health", "schedulable")
    readonly_fields = ("index", "gpu_model", "compute_mode", "memory_mode")
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = ("name", "backend", "emulated", "runtime", "memory_mode", "rocm_version", "agent_heartbeat_at", "last_synced_at")
    list_filter = ("backend", "emulated", "memory_mode")
    search_fields = ("name",)
    readonly_fields = ("amd_smi_version", "rocm_version", "memory_mode", "agent_heartbeat_at", "last_synced_at", "sync_error", "created_at")
    inlines = (GPUInline,)


class PartitionInline(admin.TabularInline):
    model = Partition
    fields = ("index", "logical_index", "xcds", "compute_units", "memory_gb", "reported_memory_mb", "render_node", "uuid")
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(GPU)
class GPUAdmin(AuditedModelAdmin):  # health/schedulable edits write audit rows
    list_display = ("__str__", "gpu_model", "compute_mode", "memory_mode", "health", "schedulable")
    list_filter = ("gpu_model", "compute_mode", "memory_mode", "health", "schedulable", "node__emulated")
    search_fields = ("node__name", "bdf", "uuid")
    list_select_related = ("node",)
    readonly_fields = _HARDWARE_GPU_FIELDS
    inlines = (PartitionInline,)
