"""Serving: the torch-free `Predictor`, preprocessing, `bench`, `info`, and the HTTP server (`http/`).

Never imports torch at module level: `pip install vitexport` (no extras) runs all of it.
"""
