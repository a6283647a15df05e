"""State changes of the partitions app (inventory and reconfiguration). Views, tasks, the API
and management commands call these; nothing else writes these rows."""

from partitions.services.inventory import (
    ImportResult,
    SyncResult,
    backend_for,
    import_amdsmi_outputs,
    record_sync_error,
    sync_inventory,
    sync_node,
)

__all__ = [
    "ImportResult", "SyncResult", "backend_for", "import_amdsmi_outputs", "record_sync_error",
    "sync_inventory", "sync_node",
]
