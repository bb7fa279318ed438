"""Kedro pipelines: thin nodes over ``data``, ``modelling``, ``runtime`` and
``tracking``; the catalog carries their inputs and outputs."""
