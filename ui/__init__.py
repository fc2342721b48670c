"""Dashboard helpers: shared sidebar and cached loaders (common), plotly figures
(charts). Pages import these and the engine's small API, never training internals."""
