"""Routers score patches; policies turn scores into classes (docs/architecture.md)."""
