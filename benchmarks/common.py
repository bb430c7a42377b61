"""What the benchmark scripts share: the ONNX Runtime session they time."""

from __future__ import annotations

import onnxruntime as ort

from vitexport.engines.ort import create_session, session_options


def cpu_session(path: str, profile_prefix: str | None = None) -> ort.InferenceSession:
    """A CPU session whose idle threads do not spin (engines run interleaved); profiling when a prefix is given."""
    if profile_prefix is None:
        return create_session(path, "cpu", spin=False)[0]
    opts = session_options(profile_prefix=profile_prefix, spin=False)
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
