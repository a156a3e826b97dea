"""The API's documentation pages, served from the project's own static files (no CDN).

Swagger UI's start-up script is served as a file of its own (`?script`), so the page needs no
inline script under the Content-Security-Policy; neither page loads anything from elsewhere.
"""

from __future__ import annotations

from csp.decorators import csp_update
from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerSplitView


class SwaggerView(SpectacularSwaggerSplitView):
    template_name = "docs/swagger_ui.html"


class RedocView(SpectacularRedocView):
    template_name = "docs/redoc.html"


swagger = SwaggerView.as_view(url_name="schema")
# Redoc's bundle injects <style> elements and runs its search index in a blob: worker.
redoc = csp_update({"style-src": ["'unsafe-inline'"], "worker-src": ["blob:"]})(
    RedocView.as_view(url_name="schema")
)
