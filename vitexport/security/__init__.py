"""Everything that reads bytes vitexport did not write: file-kind sniffing, the ONNX wire reader, bounded zip
reads, the pickle pre-scan, isolated loads of torch files, images, work limits, TorchScript admission.

Imports `vitexport._util` and `vitexport.model` only; never torch at module level.
"""
