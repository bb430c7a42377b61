"""Serving defaults, in one place: the Predictor, bench, the HTTP server's config and the CLI's help read them.

The engine default (``auto``) is `vitexport.engines.DEFAULT_PROVIDER`; the work limits are in
`vitexport.security.limits`. Plain constants: the CLI imports this at startup.
"""

from __future__ import annotations

DEFAULT_MAX_BATCH = 16  # most images of one size in one engine run (Predictor, serve)
# most tokens (images x tokens per image) in one engine run on a CPU: it bounds one run's activations and latency;
# per image, runs of 2-16 ViT-S/16 images cost the same within noise on a 2-core CPU, runs of 1 cost 12-20% more
# (benchmarks/RESULTS.md, "Images per engine run"). GPUs: no cap.
CPU_RUN_TOKENS = 2048
DEFAULT_TOP_K = 5  # classes per image in a Prediction
BENCH_BATCH_SIZES: tuple[int, ...] = (1, 8)
BENCH_WARMUP = 3  # untimed runs per case
BENCH_ITERS = 20  # timed runs per case
DEFAULT_HOST = "127.0.0.1"  # serve listens on the loopback unless told otherwise
DEFAULT_PORT = 8000
DEFAULT_BATCH_WAIT_MS = 5.0  # how long a server batch waits for more requests
DEFAULT_MAX_BODY_MB = 64.0  # largest request body (after gzip/deflate)
DEFAULT_MAX_IMAGES = 256  # most images in one server request (16 engine batches of the default size)
DEFAULT_SHARD_SIZE = 4096  # `vitexport batch`: images per output shard (the unit of resuming)
DEFAULT_MAX_IMAGE_BYTES = 256 << 20  # `vitexport batch`: an encoded image read into memory (tar member, Parquet cell)
TRITON_BACKENDS = ("onnxruntime", "python")  # `vitexport triton --backend`
TRITON_KINDS = ("cpu", "gpu")  # `vitexport triton --kind`: where Triton runs the instances

__all__ = ["BENCH_BATCH_SIZES", "BENCH_ITERS", "BENCH_WARMUP", "CPU_RUN_TOKENS", "DEFAULT_BATCH_WAIT_MS",
           "DEFAULT_HOST", "DEFAULT_MAX_BATCH", "DEFAULT_MAX_BODY_MB", "DEFAULT_MAX_IMAGES",
           "DEFAULT_MAX_IMAGE_BYTES", "DEFAULT_PORT", "DEFAULT_SHARD_SIZE", "DEFAULT_TOP_K", "TRITON_BACKENDS",
           "TRITON_KINDS"]
