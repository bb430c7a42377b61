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
from typing import Any, Dict, Iterator, List, Optional

import torch
from torch import nn

from vitexport.model.layers.embed import resample_abs_pos_embed
from vitexport.model.names import MODEL_RESAMPLE_FORMS, OUTPUTS, default_output


class ModelBase(nn.Module):
    """The base of vitexport's model classes (see the module docstring)."""

    # Python-side state that must not reach TorchScript (which always resamples with F.interpolate).
    __jit_ignored_attributes__ = ("config", "meta", "resample_form")
    # What `_init_base` sets that the forward passes read, constants in TorchScript (a subclass adds its own:
    # ``__constants__ = (*ModelBase.__constants__, ...)``).
    __constants__ = ("output", "global_pool", "num_prefix_tokens")

    def _init_base(self, config: Any, config_class: Any = None, kwargs: Optional[Dict[str, Any]] = None) -> Any:
        """Take the model's config (``config_class(**kwargs)`` when ``config`` is None; otherwise ``kwargs``
        override it) and set what every class keeps of it; returns the config."""
        if config is None:
            config = config_class(**(kwargs or {}))
        elif kwargs:
            config = config.replace(**kwargs)
        self.config = config
        self.num_classes = config.num_classes
        self.global_pool = config.global_pool
        self.num_prefix_tokens = config.num_prefix_tokens
        self.meta = {}  # preprocessing, labels, source: filled by the loader
        # How the position table is resampled outside TorchScript: MODEL_RESAMPLE_FORMS; changed only within
        # `resampling`.
        self.resample_form = "interpolate"
        self.output = default_output(config.num_classes)
        return config

    def _init_tokens(self, config: Any, num_patches: int, reg_tokens: int, pos_table: bool = True) -> None:
        """The class and register tokens and the absolute position table (None without one: ``pos_table``) of a
        model with timm's ``patch_embed`` (the ViT's and Eva's), in timm's shapes."""
        D = config.embed_dim
        self.no_embed_class = config.no_embed_class
        self.dynamic_img_size = config.dynamic_img_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D)) if config.class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, reg_tokens, D)) if reg_tokens else None
        embed_len = num_patches if config.no_embed_class else num_patches + config.num_prefix_tokens
        self.pos_embed = nn.Parameter(torch.randn(1, embed_len, D) * 0.02) if pos_table else None

    def _init_linears(self) -> None:
        """timm's init of every ``nn.Linear``: truncated normal weights (std 0.02), zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

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

    def _grid_pos_embed(self, pos_embed: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
        """``pos_embed`` (the absolute table of ``_init_tokens``) on a ``gh x gw`` patch grid: resampled from the
        native grid when ``dynamic_img_size``, in the portable form inside an ONNX export (`resampling`)."""
        if not self.dynamic_img_size:
            return pos_embed
        old = self.patch_embed.grid_size
        portable = False
        if not torch.jit.is_scripting():
            portable = self.portable_resampling()
        return resample_abs_pos_embed(pos_embed, [gh, gw], [old[0], old[1]],
                                      0 if self.no_embed_class else self.num_prefix_tokens,
                                      portable=portable)  # (1, [prefix +] gh*gw, D)

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
