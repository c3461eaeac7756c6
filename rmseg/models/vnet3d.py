"""The V-Net of Ma et al. (2020) / UA-MT (Yu et al., 2019), the network behind Table 2's comparison numbers.

Encoder stages of 1, 2, 3, 3, 3 convolutions (3x3x3 conv + BatchNorm + ReLU), ``base_filters`` doubling
per stage, down-sampling by 2x2x2 strided convolutions; decoder of 2x2x2 transposed convolutions with
additive skip connections and stages of 3, 3, 2, 1 convolutions; ``Dropout3d`` after the bottleneck and
before the 1x1x1 output convolution (active in ``train()`` only).

Input ``(B, in_channels, H, W, D)`` with every spatial size divisible by 16; output ``(B, out_channels,
H, W, D)`` logits.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_stage(num_convs: int, in_channels: int, out_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(num_convs):
        layers += [
            nn.Conv3d(in_channels if i == 0 else out_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


def _down(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, kernel_size=2, stride=2),
        nn.BatchNorm3d(out_channels),
        nn.ReLU(inplace=True),
    )


def _up(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose3d(in_channels, out_channels, kernel_size=2, stride=2),
        nn.BatchNorm3d(out_channels),
        nn.ReLU(inplace=True),
    )


class VNet3D(nn.Module):
    """V-Net of Ma et al. / UA-MT; see the module docstring for the layout and shapes.

    Args:
        in_channels, out_channels: input channels and output classes (>= 1).
        spatial_dims: 3 (the only value; taken so every model config names its dimensionality).
        base_filters: channels of the first stage (16 in the comparison), doubled at each of 4 downs.
        dropout: Dropout3d probability after the bottleneck and before the output (0.5 in the
            comparison), in [0, 1).
    """

    ENCODER_CONVS = (1, 2, 3, 3, 3)
    DECODER_CONVS = (3, 3, 2, 1)

    def __init__(self, in_channels: int = 1, out_channels: int = 2, base_filters: int = 16, dropout: float = 0.5,
                 spatial_dims: int = 3):
        super().__init__()
        if spatial_dims != 3:
            raise ValueError(f"VNet3D is 3D: spatial_dims={spatial_dims!r} must be 3")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("base_filters", base_filters)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive int")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout!r} must be in [0, 1)")
        widths = [base_filters * 2**i for i in range(5)]
        self.encoder = nn.ModuleList(
            _conv_stage(n, in_channels if i == 0 else widths[i], widths[i]) for i, n in enumerate(self.ENCODER_CONVS)
        )
        self.downs = nn.ModuleList(_down(widths[i], widths[i + 1]) for i in range(4))
        self.ups = nn.ModuleList(_up(widths[4 - i], widths[3 - i]) for i in range(4))
        self.decoder = nn.ModuleList(_conv_stage(n, widths[3 - i], widths[3 - i]) for i, n in enumerate(self.DECODER_CONVS))
        self.dropout = nn.Dropout3d(p=dropout)
        self.head = nn.Conv3d(widths[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or any(s % 16 for s in x.shape[2:]):
            raise ValueError(f"VNet3D expects (B, C, H, W, D) with H, W, D divisible by 16, got {tuple(x.shape)}")
        skips = []
        for i in range(4):
            x = self.encoder[i](x)
            skips.append(x)
            x = self.downs[i](x)
        x = self.dropout(self.encoder[4](x))
        for i in range(4):
            x = self.decoder[i](self.ups[i](x) + skips[3 - i])
        return self.head(self.dropout(x))
