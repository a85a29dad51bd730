from django.urls import path
from rest_framework.routers import SimpleRouter

from media_jobs.api import views

app_name = "api"


class OptionalSlashRouter(SimpleRouter):
    """Route `/jobs/7` and `/jobs/7/` alike: partners' clients differ on trailing slashes."""

    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("datasets", views.DatasetViewSet, basename="dataset")
router.register("items", views.ItemViewSet, basename="item")
router.register("presets", views.PresetViewSet, basename="preset")
router.register("jobs", views.JobViewSet, basename="job")
router.register("provider-accounts", views.ProviderAccountViewSet, basename="provider-account")

urlpatterns = [
    path("simple/jobs", views.SimpleJobView.as_view(), name="simple-jobs"),
    path("outputs/<int:pk>/download", views.OutputDownloadView.as_view(), name="output-download"),
    path("me", views.WhoAmIView.as_view(), name="me"),
    *router.urls,
]
