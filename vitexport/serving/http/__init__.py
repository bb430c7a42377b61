"""`vitexport serve`: the Open Inference Protocol (KServe v2) over HTTP, on Ray Serve, built on `Predictor`.

- `protocol`: the wire format as pure functions (JSON and the binary-data extension, the
  classification extension, errors); numpy only, no Ray.
- `service`: one model behind the protocol (routes, bearer-token auth, limits, batching by
  image size); no Ray, so it runs and is tested in-process. Encoded images are decoded by
  `vitexport.security.images` (the format list and decoder `predict` uses too).
- `config`: the options, the Ray Serve deployment options and the config file `serve deploy`
  and a KubeRay RayService accept.
- `batching`: `SizeBatcher`, batches of concurrent requests' chunks formed when the engine is free.
- `app`: the Ray Serve deployment (a `SizeBatcher` in front of the service) and the application builder.
- `launch`: start a local Ray instance or connect to a cluster, deploy, stop cleanly on SIGINT/SIGTERM.

Nothing here imports torch; only `app` and `launch` import Ray.
"""

from __future__ import annotations
