"""The HTTP API (FastAPI): the app factory, routes, settings and request guards;
finding and classifying faces comes from ``fer_pipeline.runtime``."""
