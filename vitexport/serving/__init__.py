"""Serving: the torch-free `Predictor` (and `predict_files`), its `defaults`, batching by size (`batching`),
preprocessing, `bench`, `info` (typed descriptions), the HTTP server (`http/`), its gRPC form (`grpc/`), and
Triton model repositories with KServe configs (`triton/`).

Never imports torch at module level: `pip install vitexport` (no extras) runs all of it.
"""
