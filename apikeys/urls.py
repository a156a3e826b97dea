from django.urls import path

from .base import KeyMeView

urlpatterns = [
    path("keys/me", KeyMeView.as_view(), name="apikey-me"),
]
