from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from accounts import views as account_views
from media_jobs import provider_views, webhooks

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/v1/", include("media_jobs.api.urls")),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("invite/<str:token>/", account_views.accept_invitation, name="accept_invitation"),
    path("healthz", account_views.healthz, name="healthz"),
    path(
        "hooks/<str:kind>/<int:job_id>/<str:token>",
        webhooks.provider_webhook,
        name="provider-webhook",
    ),
    path(
        "providers/<str:kind>/connect/<slug:slug>/",
        provider_views.oauth_connect,
        name="provider-oauth-connect",
    ),
    path(
        "providers/<str:kind>/callback/",
        provider_views.oauth_callback,
        name="provider-oauth-callback",
    ),
    path("sandbox/", include("media_jobs.sandbox.urls")),
    path("", include("media_jobs.dashboard.urls")),
]
