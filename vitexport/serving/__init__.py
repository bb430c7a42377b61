"""Serving: the torch-free `Predictor` (and `predict_files`), its `defaults`, batching by size (`batching`),
preprocessing, `bench`, `info` (typed descriptions), and the HTTP server (`http/`).

Never imports torch at module level: `pip install vitexport` (no extras) runs all of it.
"""
