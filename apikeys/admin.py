"""Admin for API keys: list, search, create (showing the key once), revoke.

The hash is never shown. A new key's raw form is rendered straight into the response to the
add form rather than put in a message, because messages are stored in a cookie or the session
until displayed, and the key must not be stored anywhere.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from .models import ApiKey, KeyStatus, Scope, default_scopes
from .services import apikey_create, apikey_revoke, apikey_update


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=Scope.choices, widget=forms.CheckboxSelectMultiple, initial=default_scopes
    )

    class Meta:
        model = ApiKey
        fields = ["name", "scopes", "rate_limit", "expires_at"]


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

    @admin.display(description="status")
    def status(self, obj: ApiKey) -> str:
        return obj.status().value if obj.pk else "-"

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        editable = ["name", "scopes", "rate_limit", "expires_at"]
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
            )
            return
        key, raw = apikey_create(
            name=data["name"],
            scopes=data["scopes"],
            rate_limit=data["rate_limit"],
            expires_at=data["expires_at"],
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
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "key": obj,
            "raw_key": raw,
            "title": "API key created",
        }
        # Admin views are already never_cache, so the page (and the key) stays out of caches.
        return TemplateResponse(request, "admin/apikeys/apikey/created.html", context)

    @admin.action(description="Revoke selected keys")
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = sum(apikey_revoke(key=key) for key in queryset)
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)
