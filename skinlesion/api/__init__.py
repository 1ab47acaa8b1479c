"""The prediction API (FastAPI). ``create_app(settings)`` builds it; nothing happens at import time.

Routes stay thin: validate input, call the serving service or the store, map errors to JSON bodies
that name the field and the fix.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from skinlesion import __version__
from skinlesion.api.errors import install_error_handlers
from skinlesion.api.guards import Gate, KeyVerifier, PixelBudget, RateLimits
from skinlesion.api.metrics import ApiMetrics, StartStamp
from skinlesion.data.images import MAX_PIXELS
from skinlesion.errors import DataError
from skinlesion.api.routes import router
from skinlesion.serving import ServingService
from skinlesion.settings import Settings
from skinlesion.store import Store

log = logging.getLogger("skinlesion.api")


def _keys_revoked(app: FastAPI) -> int:
    """Revocations made through the app's store in this process (0 before the service starts)."""
    service = app.state.service
    return service.store.keys_revoked if service is not None else 0


def _batching(app: FastAPI) -> dict[tuple[str, str], tuple[int, int]]:
    """Forwards and images per loaded version (none before the service starts)."""
    service = app.state.service
    return service.batching() if service is not None else {}


def create_app(settings: Settings | None = None, *, service: ServingService | None = None) -> FastAPI:
    """The API app. Pass ``service`` to inject one (tests); otherwise it is built from ``settings``
    when the app starts and closed (pending log rows flushed) when it stops."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        owned = app.state.service is None
        if owned:
            store = Store(settings.store_url, busy_timeout_s=settings.busy_timeout_s)
            app.state.service = ServingService(
                store, settings.models_dir, device=settings.device, runtime=settings.runtime,
                route_ttl_s=settings.route_ttl_s,
                retention_dir=settings.retention_dir)
        yield
        if owned:
            app.state.service.close()

    app = FastAPIOffline(  # /docs and /redoc from the installed package's files, never a CDN
        title="skinlesion API",
        version=__version__,
        summary="Skin-lesion classification (dermoscopy image + age, sex, anatomical site) with "
                "every answer logged for monitoring and audit.",
        lifespan=lifespan,
    )
    if settings.decode_budget_px < MAX_PIXELS:
        raise DataError(f"decode_budget_px must hold the largest image accepted ({MAX_PIXELS:,} "
                        f"pixels), got {settings.decode_budget_px:,}", field="decode_budget_px")
    app.state.settings = settings
    app.state.service = service
    app.state.metrics = ApiMetrics()
    app.state.metrics.watch_batching(lambda: _batching(app))
    app.state.rate_limits = RateLimits(settings.rate_limit_per_address, settings.rate_limit_per_key,
                                       settings.auth_failures_per_address)
    app.state.key_verifier = KeyVerifier(lambda key: app.state.service.store.api_key_scopes(key),
                                         settings.key_cache_ttl_s,
                                         revocations=lambda: _keys_revoked(app))
    app.state.pixel_budget = PixelBudget(settings.decode_budget_px)
    app.add_middleware(Gate)  # inside StartStamp: a refusal's latency is measured too
    app.add_middleware(StartStamp)
    install_error_handlers(app)
    app.include_router(router)
    return app
