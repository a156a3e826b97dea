"""Admin for API keys: list, search, create (showing the key once), revoke.

The hash is never shown. A new key is shown by POST-redirect-GET: the add form's POST stores the
raw key in the session and redirects to the "key created" page, whose first GET takes it out of
the session again and renders it. A reload of that page shows it no more and creates nothing
(rendering it as the POST's own answer would re-submit the form, and create a second key). A
message would not do: messages may sit in a cookie until displayed.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache

from .models import ApiKey, KeyStatus, Scope, default_scopes
from .namespaces import NAMESPACES_MAX, namespaces_parse
from .services import apikey_create, apikey_revoke, apikey_update

# The session entry holding a new key's raw form between the add form's POST and the next GET.
_SESSION_NEW_KEY = "apikeys.new_key"


class NamespacesField(forms.CharField):
    """The key's namespaces as one comma-separated line, checked as everywhere else."""

    def prepare_value(self, value: object) -> object:
        return ", ".join(value) if isinstance(value, list | tuple) else value

    def to_python(self, value: object) -> list[str]:  # type: ignore[override]
        text = super().to_python(value)
        try:
            return namespaces_parse(text)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=Scope.choices, widget=forms.CheckboxSelectMultiple, initial=default_scopes
    )
    namespaces = NamespacesField(
        required=False,
        help_text="Comma-separated metric-name prefixes this key may read and write, e.g. "
        f"checkout., shared.web. (at most {NAMESPACES_MAX}). A name is inside when it starts "
        "with one of them; empty: every metric. Only keys that are empty here or cover "
        "glowing_fiesta. read the service's own figures and GET /metrics.",
    )

    class Meta:
        model = ApiKey
        fields = ["name", "scopes", "namespaces", "rate_limit", "expires_at"]


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        return KeyStatus.choices

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> QuerySet[ApiKey]:
        now = timezone.now()
        expired = Q(expires_at__isnull=False, expires_at__lte=now)
        if self.value() == KeyStatus.REVOKED:
            return queryset.filter(revoked_at__isnull=False)
        if self.value() == KeyStatus.EXPIRED:
            return queryset.filter(expired, revoked_at__isnull=True)
        if self.value() == KeyStatus.ACTIVE:
            return queryset.filter(revoked_at__isnull=True).exclude(expired)
        return queryset


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = [
        "name",
        "prefix",
        "scope_list",
        "namespace_list",
        "rate_limit",
        "created_at",
        "last_used_at",
        "status",
    ]
    list_filter = [StatusFilter]
    search_fields = ["name", "prefix"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at", "status"]
    actions = ["revoke_selected"]

    @admin.display(description="scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes)

    @admin.display(description="namespaces")
    def namespace_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.namespaces) or "all"

    @admin.display(description="status")
    def status(self, obj: ApiKey) -> str:
        return obj.status().value if obj.pk else "-"

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        editable = ["name", "scopes", "namespaces", "rate_limit", "expires_at"]
        return editable if obj is None else [*editable, *self.readonly_fields]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        return [] if obj is None else self.readonly_fields

    def has_delete_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        # Keys are revoked, not deleted, so the list keeps a record of every key issued.
        return False

    def save_model(self, request: HttpRequest, obj: ApiKey, form: forms.Form, change: bool) -> None:
        data = form.cleaned_data
        if change:
            apikey_update(
                key=obj,
                name=data["name"],
                scopes=data["scopes"],
                rate_limit=data["rate_limit"],
                expires_at=data["expires_at"],
                namespaces=data["namespaces"],
            )
            return
        key, raw = apikey_create(
            name=data["name"],
            scopes=data["scopes"],
            rate_limit=data["rate_limit"],
            expires_at=data["expires_at"],
            namespaces=data["namespaces"],
        )
        # The admin goes on to log the addition against `obj`, so it becomes the saved row.
        for field in ApiKey._meta.concrete_fields:
            setattr(obj, field.attname, getattr(key, field.attname))
        obj._state.adding = False
        obj._state.db = key._state.db
        request._new_api_key = raw

    def response_add(
        self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None
    ) -> HttpResponse:
        raw = getattr(request, "_new_api_key", None)
        if raw is None:  # pragma: no cover - save_model always sets it on add
            return super().response_add(request, obj, post_url_continue)
        request.session[_SESSION_NEW_KEY] = {"id": obj.pk, "raw": raw}
        return HttpResponseRedirect(reverse("admin:apikeys_apikey_created", args=[obj.pk]))

    def get_urls(self) -> list[URLPattern]:
        created = self.admin_site.admin_view(never_cache(self.created_view))
        return [
            path("<int:key_id>/created/", created, name="apikeys_apikey_created"),
            *super().get_urls(),
        ]

    def created_view(self, request: HttpRequest, key_id: int) -> HttpResponse:
        """The "key created" page: the raw key the first time, a notice that it is gone after."""
        key = get_object_or_404(ApiKey, pk=key_id)
        if not self.has_view_permission(request, key):
            return HttpResponseRedirect(reverse("admin:index"))
        handed = request.session.get(_SESSION_NEW_KEY) or {}
        raw = None
        if handed.get("id") == key.pk:
            raw = request.session.pop(_SESSION_NEW_KEY)["raw"]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "key": key,
            "raw_key": raw,
            "title": "API key created",
        }
        return TemplateResponse(request, "admin/apikeys/apikey/created.html", context)

    @admin.action(description="Revoke selected keys")
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = sum(apikey_revoke(key=key) for key in queryset)
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)
