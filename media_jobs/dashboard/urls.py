"""Dashboard URLs: everything of a workspace lives under /w/<slug>/."""

from django.urls import path

from media_jobs.dashboard import accounts, presets, views

app_name = "dashboard"

urlpatterns = [
    path("", views.home, name="home"),
    path("workspaces/", views.home, {"redirect_single": False}, name="workspaces"),
    path("w/<slug:slug>/", views.workspace, name="workspace"),
    path("w/<slug:slug>/upload/", views.upload, name="upload"),
    path("w/<slug:slug>/datasets/<int:pk>/", views.dataset, name="dataset"),
    path("w/<slug:slug>/items/<int:pk>/", views.item, name="item"),
    path("w/<slug:slug>/items/<int:pk>/run/", views.item_run, name="item-run"),
    path("w/<slug:slug>/jobs/<int:pk>/", views.job, name="job"),
    path("w/<slug:slug>/jobs/<int:pk>/cancel/", views.job_cancel, name="job-cancel"),
    path("w/<slug:slug>/members/", views.members, name="members"),
    path("w/<slug:slug>/members/invite/", views.invite, name="invite"),
    path("w/<slug:slug>/members/<int:pk>/remove/", views.member_remove, name="member-remove"),
    path("w/<slug:slug>/keys/", views.key_create, name="key-create"),
    path("w/<slug:slug>/keys/<int:pk>/revoke/", views.key_revoke, name="key-revoke"),
    path("w/<slug:slug>/accounts/", accounts.accounts, name="accounts"),
    path("w/<slug:slug>/accounts/add/<str:kind>/", accounts.account_add, name="account-add"),
    path("w/<slug:slug>/accounts/<int:pk>/test/", accounts.account_test, name="account-test"),
    path(
        "w/<slug:slug>/accounts/<int:pk>/disconnect/",
        accounts.account_disconnect,
        name="account-disconnect",
    ),
    path("w/<slug:slug>/presets/", presets.presets, name="presets"),
    path("w/<slug:slug>/presets/new/", presets.preset_new, name="preset-new"),
    path("w/<slug:slug>/presets/<int:pk>/edit/", presets.preset_edit, name="preset-edit"),
    path("w/<slug:slug>/presets/<int:pk>/delete/", presets.preset_delete, name="preset-delete"),
]
