"""What every model class shares with the exporters: its config and metadata, how it resamples its position
table inside an export (`ModelBase.resampling`), and which output ``forward`` returns (`ModelBase.producing`).

The classes (`vitexport.model.vit.VisionTransformer`, the distilled DeiT, `vitexport.model.eva.Eva`,
`vitexport.model.naflex.NaFlexVit`) define ``forward_features`` (every token after the final norm) and
``forward_head(x, pre_logits)`` as timm's do; ``forward`` returns one of `vitexport.model.names.OUTPUTS`:

- ``logits``: ``forward_head(forward_features(x))``, the default when the model has a head;
- ``features``: ``forward_head(..., pre_logits=True)``, the pooled embedding before the head (the default
  without one);
- ``tokens``: ``forward_features(x)``.

TorchScript reads ``output`` as a constant when it scripts the model (each class annotates it ``Final``).
"""

# No `from __future__ import annotations` here: TorchScript compiles the subclasses.

import contextlib
from typing import Any, Iterator, List

import torch
from torch import nn

from vitexport.model.names import MODEL_RESAMPLE_FORMS, OUTPUTS, default_output


class ModelBase(nn.Module):
    """The base of vitexport's model classes (see the module docstring)."""

    # Python-side state that must not reach TorchScript (which always resamples with F.interpolate).
    __jit_ignored_attributes__ = ("config", "meta", "resample_form")

    def _init_base(self, config: Any) -> None:
        self.config = config
        self.meta = {}  # preprocessing, labels, source: filled by the loader
        # How the position table is resampled outside TorchScript: MODEL_RESAMPLE_FORMS; changed only within
        # `resampling`.
        self.resample_form = "interpolate"
        self.output = default_output(config.num_classes)

    @torch.jit.ignore
    @contextlib.contextmanager
    def resampling(self, form: str) -> Iterator["ModelBase"]:
        """Within the block, resample the positional embeddings in ``form`` (`MODEL_RESAMPLE_FORMS`); the previous
        form is restored afterwards.

        ``"interpolate"`` (the default) is ``F.interpolate``, what eager PyTorch and TorchScript run, exported as one
        Resize; ``"portable"`` computes the same from elementary ops that every ONNX runtime runs right
        (`vitexport.model.resample`, `vitexport.model.interp`). The ONNX exporter traces the model inside
        ``model.resampling("portable")``. A scripted model always uses ``F.interpolate``.
        """
        if form not in MODEL_RESAMPLE_FORMS:
            raise ValueError(f"resample form {form!r} is not one of {', '.join(MODEL_RESAMPLE_FORMS)}")
        previous, self.resample_form = self.resample_form, form
        try:
            yield self
        finally:
            self.resample_form = previous

    @torch.jit.ignore
    def portable_resampling(self) -> bool:
        """Whether the position table is resampled in the portable form now (never inside TorchScript)."""
        return self.resample_form == "portable"

    @torch.jit.ignore
    def select_output(self, output: str) -> None:
        """From now on ``forward`` returns ``output`` (`vitexport.model.names.OUTPUTS`; `producing` for a block).

        ``logits`` needs a head: a model without one (``num_classes=0``) refuses it (`ValueError`).
        """
        if output not in OUTPUTS:
            raise ValueError(f"output {output!r} is not one of {', '.join(OUTPUTS)}")
        if output == "logits" and self.config.num_classes == 0:
            raise ValueError("this model has no classification head (num_classes=0): its output is the pooled "
                             "embedding; use output 'features' (or 'tokens')")
        self.output = output

    @torch.jit.ignore
    @contextlib.contextmanager
    def producing(self, output: str) -> Iterator["ModelBase"]:
        """Within the block, ``forward`` returns ``output`` (`select_output`); the previous output is restored
        afterwards."""
        previous = self.output
        self.select_output(output)
        try:
            yield self
        finally:
            self.output = previous

    def _prefix_tokens(self, batch: int) -> List[torch.Tensor]:
        """The class and register tokens (``cls_token``, ``reg_token``) of a batch, in timm's order; a class with
        other prefix tokens (the distilled DeiT's) overrides this."""
        prefix: List[torch.Tensor] = []
        if self.cls_token is not None:
            prefix.append(self.cls_token.expand(batch, -1, -1))
        if self.reg_token is not None:
            prefix.append(self.reg_token.expand(batch, -1, -1))
        return prefix

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)  # (B, T, D)
        if self.output == "tokens":
            return x
        return self.forward_head(x, pre_logits=self.output == "features")


__all__ = ["ModelBase"]
