"""A small ResNet family in plain torch (no torchvision / timm), for grayscale or RGB images of any size.

Why our own: torchvision's only registry build here is CUDA-linked and breaks CPU imports, and the image
users of headstart train small inputs (28x28 glyphs, 32x64 crops) where ImageNet stems (7x7 stride 2 +
max-pool) throw away most of the image. The stem here is a 3x3 convolution (stride 1 by default), stages
of basic residual blocks with optional squeeze-and-excitation, then global average pooling, so any input
size of at least 2**(stages-1) pixels per side works.

Layer map (what strategies freeze and unfreeze): ``stem``, then one block per residual block named
``stage{s}.{i}``, input to output; the pooled features have ``widths[-1]`` channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from headstart.backbones.base import Backbone
from headstart.errors import ConfigError

__all__ = ["RESNET_PRESETS", "BasicBlock", "ResNetBackbone", "SqueezeExcite"]

# name -> (blocks per stage, channels per stage)
RESNET_PRESETS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "resnet8": ((1, 1, 1), (16, 32, 64)),
    "resnet10": ((1, 1, 1, 1), (32, 64, 128, 256)),
    "resnet14": ((2, 2, 2), (16, 32, 64)),
    "resnet18": ((2, 2, 2, 2), (64, 128, 256, 512)),
    "resnet20": ((3, 3, 3), (16, 32, 64)),
    "resnet34": ((3, 4, 6, 3), (64, 128, 256, 512)),
}


class SqueezeExcite(nn.Module):
    """Channel attention: global pool -> bottleneck MLP -> sigmoid gate (Hu et al., 2018)."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(4, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(gate))))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut; SE before the addition."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, se: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.se = SqueezeExcite(c_out) if se else nn.Identity()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return torch.relu(out + self.shortcut(x))


class ResNetBackbone(Backbone):
    """``[B, C, H, W]`` images -> ``[B, widths[-1]]`` features; stage s > 0 halves the resolution."""

    supports_gradient_checkpointing = True  # BatchNorm statistics: see checkpointed_call

    def __init__(
        self,
        depths: Sequence[int] = (2, 2, 2),
        widths: Sequence[int] = (16, 32, 64),
        in_channels: int = 1,
        se: bool = False,
        stem_stride: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        depths, widths = [int(d) for d in depths], [int(w) for w in widths]
        if not depths or len(depths) != len(widths):
            raise ConfigError(
                f"backbone.depths and backbone.widths must be non-empty lists of the same length (one entry per "
                f"stage), got depths={depths} and widths={widths}."
            )
        if min(depths) < 1 or min(widths) < 1:
            raise ConfigError(f"Every stage needs at least one block and one channel: depths={depths}, "
                              f"widths={widths}.")
        if in_channels < 1:
            raise ConfigError(f"backbone.in_channels must be >= 1 (1 grayscale, 3 RGB), got {in_channels}.")
        if stem_stride not in (1, 2):
            raise ConfigError(f"backbone.stem_stride must be 1 or 2, got {stem_stride}.")
        self.config = {"depths": depths, "widths": widths, "in_channels": int(in_channels), "se": bool(se),
                       "stem_stride": int(stem_stride), "dropout": float(dropout)}
        self.in_channels = int(in_channels)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, stride=stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        self.stages = nn.ModuleList()
        c_in = widths[0]
        for s, (depth, width) in enumerate(zip(depths, widths, strict=True)):
            blocks = [BasicBlock(c_in if i == 0 else width, width, stride=2 if (s > 0 and i == 0) else 1, se=se)
                      for i in range(depth)]
            self.stages.append(nn.Sequential(*blocks))
            c_in = width
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.out_dim = widths[-1]

    @classmethod
    def from_preset(cls, name: str, **kwargs: Any) -> ResNetBackbone:
        from headstart.errors import did_you_mean

        if name not in RESNET_PRESETS:
            raise ConfigError(
                f"backbone.arch '{name}' is not a ResNet preset.{did_you_mean(name, RESNET_PRESETS)} "
                f"Presets: {', '.join(RESNET_PRESETS)}; or give backbone.depths and backbone.widths."
            )
        depths, widths = RESNET_PRESETS[name]
        return cls(depths, widths, **kwargs)

    def blocks(self) -> list[tuple[str, nn.Module]]:
        out: list[tuple[str, nn.Module]] = [("stem", self.stem)]
        for s, stage in enumerate(self.stages):
            out += [(f"stage{s + 1}.{i}", block) for i, block in enumerate(stage)]
        return out

    def forward(self, inputs: Any) -> torch.Tensor:
        x = inputs["pixel_values"] if isinstance(inputs, dict) else inputs
        if x.dim() == 3:  # [B, H, W] grayscale
            x = x.unsqueeze(1)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"ResNetBackbone expects images [batch, {self.in_channels}, height, width], got shape "
                f"{tuple(x.shape)}. Set backbone.in_channels to the images' channel count (1 grayscale, 3 RGB)."
            )
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.dropout(x.mean(dim=(2, 3)))

    def describe(self) -> dict[str, object]:
        return {**super().describe(), **self.config}

    def architecture(self) -> dict[str, object]:
        return {"type": "ResNetBackbone", **self.config}
