"""The API root (every resource with its URL), API tokens (create → key shown once, list,
revoke) and the audit trail (admins)."""

from __future__ import annotations

import datetime
from typing import Any, cast

import django_filters
import orjson
from django.contrib.auth import get_user_model
from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from aimconsole import services
from aimconsole.api import RejectUnknownFieldsMixin
from aimconsole.audit import escape_control
from aimconsole.models import ApiToken, AuditEvent, TokenScope
from aimconsole.permissions import HasRole
from aimconsole.renderers import ORJSONRenderer, _default


class IndentedORJSONRenderer(ORJSONRenderer):
    """ORJSONRenderer that indents when asked (the browsable API asks, with ``indent`` in the
    renderer context); JSON clients still get compact bodies."""

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        if data is None or not (renderer_context or {}).get("indent"):
            return super().render(data, accepted_media_type, renderer_context)
        return orjson.dumps(data, default=_default, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_INDENT_2)


def _list_routes(patterns: list[Any], prefix: str) -> list[tuple[str, str]]:
    """(path below the root, url name) of every router list route under these patterns."""
    found = []
    for p in patterns:
        if isinstance(p, URLResolver):
            found += _list_routes(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern) and p.name and "list" in (getattr(p.callback, "actions", None) or {}).values():
            found.append((prefix + str(p.pattern), p.name))
    return found


class ApiRootView(APIView):
    """Every resource of the v1 API with its URL: the list routes of every app's router,
    found in the URL configuration (a router added later appears without changing this)."""

    permission_classes = (HasRole,)
    renderer_classes = (IndentedORJSONRenderer, *[r for r in APIView.renderer_classes if r is not ORJSONRenderer])
    schema = None  # not a resource: left out of the OpenAPI schema

    def get(self, request: Request) -> Response:
        root = request.resolver_match.route if request.resolver_match else "api/v1/"  # where this view is mounted
        resources = {}
        for path, name in _list_routes(get_resolver(getattr(request, "urlconf", None)).url_patterns, ""):
            path = path.replace("^", "").replace("$", "")
            if path.startswith(root) and path != root:
                resources[path.removeprefix(root).strip("/")] = reverse(name, request=request)
        return Response(dict(sorted(resources.items())))


@extend_schema_field({"type": "array", "items": {"type": "string", "enum": list(TokenScope.values)}})
class ScopesField(serializers.ListField):
    """Token scopes; which ones may be issued is the service's rule (services.check_scopes)."""

    child = serializers.CharField(max_length=32)


class TokenSerializer(RejectUnknownFieldsMixin, serializers.ModelSerializer[ApiToken]):
    user = serializers.SlugRelatedField(slug_field="username", queryset=get_user_model().objects.all(), required=False,
                                        help_text="Admins may create tokens for other users; default: yourself.")
    active = serializers.BooleanField(source="is_active", read_only=True)
    prefix = serializers.SerializerMethodField()
    scopes = ScopesField(required=False, help_text="What the token is accepted for: api (default), metrics "
                                                   "(/metrics, for Prometheus) and/or inference (the gateway's /v1/).")

    class Meta:
        model = ApiToken
        fields = ("id", "name", "user", "prefix", "scopes", "active", "created_at", "expires_at", "last_used_at",
                  "revoked_at")
        read_only_fields = ("id", "prefix", "active", "created_at", "last_used_at", "revoked_at")

    def get_prefix(self, token: ApiToken) -> str:
        return f"aim_{token.prefix}_"

    def validate_name(self, value: str) -> str:
        if escape_control(value) != value:
            raise serializers.ValidationError("control characters are not allowed in names")
        return value


class TokenCreatedSerializer(TokenSerializer):
    key = serializers.CharField(read_only=True, help_text="Shown once: store it now; only its hash is kept.")

    class Meta(TokenSerializer.Meta):
        fields = (*TokenSerializer.Meta.fields, "key")  # type: ignore[assignment]  # a longer tuple than the base's


class TokenPermission(permissions.BasePermission):
    """Every signed-in user manages their own tokens; admins (change_apitoken) everyone's."""

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated)

    def has_object_permission(self, request, view, obj):
        return obj.user_id == request.user.pk or request.user.has_perm("aimconsole.change_apitoken")


class TokenViewSet(mixins.CreateModelMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                   mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """API tokens. DELETE revokes (the row stays for the audit trail)."""

    serializer_class = TokenSerializer
    permission_classes = (TokenPermission,)
    filterset_fields = ("user__username",)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return ApiToken.objects.none()
        tokens = ApiToken.objects.select_related("user")
        if self.request.user.has_perm("aimconsole.change_apitoken"):
            return tokens
        return tokens.filter(user_id=cast(int, self.request.user.pk))  # signed in: TokenPermission

    @extend_schema(request=TokenSerializer, responses={201: TokenCreatedSerializer, 400: OpenApiResponse(description="Invalid")})
    def create(self, request: Request, *args, **kwargs) -> Response:
        payload = TokenSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        user = payload.validated_data.get("user") or request.user
        if user != request.user and not request.user.has_perm("aimconsole.add_apitoken"):
            self.permission_denied(request, message="Only admins create tokens for other users.")
        token, key = services.create_token(user=user, name=payload.validated_data["name"],
                                           expires_at=payload.validated_data.get("expires_at"),
                                           scopes=payload.validated_data.get("scopes", [TokenScope.API]))
        body = TokenCreatedSerializer(token).data
        body["key"] = key
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(responses={200: TokenSerializer})
    def destroy(self, request: Request, *args, **kwargs) -> Response:
        token = services.revoke_token(token=self.get_object())
        return Response(TokenSerializer(token).data, status=status.HTTP_200_OK)


class VisibleTextField(serializers.CharField):
    """Text shown with control and bidi characters as visible escapes (aimconsole/text.py):
    audit rows hold what users and outputs wrote."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(read_only=True, **kwargs)

    def to_representation(self, value: Any) -> str:
        return escape_control(value)


class AuditEventSerializer(serializers.ModelSerializer[AuditEvent]):
    actor = VisibleTextField(help_text="Username at the time, or 'system' / an agent name (control characters escaped).")
    object_id = VisibleTextField()
    object_repr = VisibleTextField(help_text="The object as it was named then (control characters escaped).")

    class Meta:
        model = AuditEvent
        fields = ("id", "at", "actor", "actor_id", "action", "object_type", "object_id", "object_repr", "before",
                  "after", "request_id", "source_ip")
        read_only_fields = fields


class UTCDateTimeFilter(django_filters.IsoDateTimeFilter):
    """ISO 8601 with any offset, compared in UTC (PostgreSQL refuses offsets beyond ±15:59,
    which ISO 8601 parsers accept)."""

    def filter(self, qs, value):
        if value is not None:
            try:
                value = value.astimezone(datetime.UTC)
            except OverflowError:
                raise serializers.ValidationError({self.field_name: "date out of range"}) from None
        return super().filter(qs, value)


class AuditEventFilter(django_filters.FilterSet):
    since = UTCDateTimeFilter(field_name="at", lookup_expr="gte")
    until = UTCDateTimeFilter(field_name="at", lookup_expr="lt")
    action = django_filters.CharFilter(lookup_expr="startswith")

    class Meta:
        model = AuditEvent
        fields = ("action", "actor", "object_type", "object_id", "request_id", "since", "until")


class AuditEventViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit trail (admins). Append-only: there is no write endpoint."""

    queryset = AuditEvent.objects.all()
    serializer_class = AuditEventSerializer
    filterset_class = AuditEventFilter
    ordering_fields = ("at",)
