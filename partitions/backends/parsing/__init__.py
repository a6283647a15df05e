"""Pure parsers of amd-smi output (no Django, no subprocess).

Every malformed input raises :class:`~partitions.backends.errors.ParseError` naming the
command and quoting the offending text (truncated to ~200 characters).
"""

from partitions.backends.parsing.changes import (
    DefaultView,
    DefaultViewRow,
    SetEntry,
    SetResult,
    parse_default_view,
    parse_set_output,
    parse_valid_inputs,
)
from partitions.backends.parsing.classify import ConfirmationDeclined, classify_error
from partitions.backends.parsing.common import json_documents
from partitions.backends.parsing.inventory import build_inventory, gpu_model_for
from partitions.backends.parsing.outputs import (
    COMPUTE_MODES,
    MEMORY_MODES,
    parse_list,
    parse_metrics,
    parse_monitor,
    parse_partition,
    parse_static,
)
from partitions.backends.versions import parse_version

__all__ = [
    "COMPUTE_MODES", "MEMORY_MODES", "ConfirmationDeclined", "DefaultView", "DefaultViewRow",
    "SetEntry", "SetResult", "build_inventory", "classify_error", "gpu_model_for",
    "json_documents", "parse_default_view", "parse_list", "parse_metrics", "parse_monitor",
    "parse_partition", "parse_set_output", "parse_static", "parse_valid_inputs", "parse_version",
]
