from django.apps import AppConfig


class GlowingFiestaConfig(AppConfig):
    name = "glowing_fiesta"
    verbose_name = "Glowing Fiesta"
