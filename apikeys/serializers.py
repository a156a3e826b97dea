from rest_framework import serializers

from .models import ApiKey


class ApiKeyOutput(serializers.ModelSerializer):
    class Meta:
        model = ApiKey
        fields = ["name", "prefix", "scopes", "namespaces", "rate_limit", "expires_at"]
        read_only_fields = fields
