"""OpenAPI extensions (drf-spectacular): describe the token authentication."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class HashedTokenScheme(OpenApiAuthenticationExtension):
    target_class = "aimconsole.authentication.HashedTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "Token-based authentication: `Authorization: Token aim_…` (create one at POST /api/v1/tokens/).",
        }


ERROR_SCHEMA = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "string", "description": "Machine-readable error code (invalid, not_found, conflict, …)"},
        "message": {"type": "string", "description": "What went wrong, for a person"},
        "detail": {"description": "Field errors or context (e.g. the operation in progress)", "nullable": True},
    },
}
_ERRORS = {
    "400": "Invalid input (the message names the field and the valid choices)",
    "401": "Not authenticated",
    "403": "Not authenticated, or the role does not allow this",
    "404": "No such resource",
    "405": "Method not allowed",
    "406": "Not acceptable",
    "409": "Conflicts with the current state (an operation in progress, a stale plan)",
    "412": "If-Match does not match the current ETag",
    "413": "Request body too large",
    "415": "Unsupported media type",
    "428": "If-Match required",
    "503": "A backing service (Redis, database) is unavailable",
}


def add_error_responses(result, generator, request, public):
    """drf-spectacular postprocessing hook: every operation documents the error shape for the
    statuses the API can answer, so clients (and schemathesis) know every response."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    ref = {"$ref": "#/components/schemas/Error"}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            wanted = ["400", "401", "403", "405", "406", "415", "503"]
            if "{" in path:
                wanted.append("404")
            if method in ("put", "patch", "delete"):
                wanted += ["412", "428"]
            if method in ("post", "put", "patch", "delete"):
                wanted += ["409", "413"]
            for status in wanted:
                operation["responses"].setdefault(status, {
                    "description": _ERRORS[status], "content": {"application/json": {"schema": ref}},
                })
    return result
