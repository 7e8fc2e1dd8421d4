"""pix2pixHD networks for single-channel microscopy textures.

Wang et al., "High-Resolution Image Synthesis and Semantic Manipulation with Conditional GANs"
(CVPR 2018): a coarse-to-fine generator (a global generator with residual blocks, optionally wrapped
by local enhancers that work at twice the resolution) and multi-scale PatchGAN discriminators whose
intermediate features feed the feature-matching loss.

The input of the generator is the condition: a foreground-mask channel and an instance-boundary
channel (:func:`cellinr.texture.data.condition_from_labels`), both in {0, 1}; the output is one
grayscale channel in [-1, 1] (tanh). All sizes are configurable; :class:`TextureNetConfig` defaults
to a small CPU-friendly model, :meth:`TextureNetConfig.pix2pixhd` gives the paper's defaults.
"""

from __future__ import annotations

import torch
from torch import nn

from cellinr.nn.texture_config import TextureNetConfig


def _norm_layer(norm: str, channels: int) -> nn.Module:
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    if norm == "batch":
        return nn.BatchNorm2d(channels, affine=True)
    return nn.Identity()


def init_weights(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """pix2pixHD initialisation: conv weights N(0, 0.02), norm scales N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            with torch.no_grad():
                m.weight.normal_(0.0, 0.02, generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.normal_(1.0, 0.02, generator=generator)
                m.bias.zero_()


class ResnetBlock(nn.Module):
    """Two reflect-padded 3x3 convolutions with a skip connection: (N, C, H, W) -> (N, C, H, W)."""

    def __init__(self, channels: int, norm: str = "instance") -> None:
        super().__init__()
        self.channels = channels
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm_layer(norm, channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm_layer(norm, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


class GlobalGenerator(nn.Module):
    """pix2pixHD global generator: c7s1-ngf, n_downsample x d, n_blocks x R, n_downsample x u, c7s1-out, tanh.

    Input (N, in_channels, H, W) with H, W multiples of ``2 ** n_downsample``; output (N, out_channels, H, W).
    """

    def __init__(
        self, in_channels: int = 2, out_channels: int = 1, *, ngf: int = 64, n_downsample: int = 4,
        n_blocks: int = 9, norm: str = "instance",
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.ngf, self.n_downsample, self.n_blocks, self.norm = ngf, n_downsample, n_blocks, norm
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7), _norm_layer(norm, ngf), nn.ReLU(True),
        ]
        for i in range(n_downsample):
            c = ngf * 2**i
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), _norm_layer(norm, 2 * c), nn.ReLU(True)]
        c = ngf * 2**n_downsample
        layers += [ResnetBlock(c, norm) for _ in range(n_blocks)]
        for i in range(n_downsample):
            c = ngf * 2 ** (n_downsample - i)
            layers += [
                nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1),
                _norm_layer(norm, c // 2), nn.ReLU(True),
            ]
        # features before the output head, for the local enhancer
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, ngf={self.ngf}, "
                f"n_downsample={self.n_downsample}, n_blocks={self.n_blocks}, norm={self.norm!r}")


class LocalEnhancer(nn.Module):
    """pix2pixHD coarse-to-fine generator: a global generator at 1 / 2**k resolution inside k local enhancers.

    The global generator (with ``ngf * 2**k`` filters) sees the input down-sampled k times; each
    enhancer adds its own down-sampled features to the coarser result and refines it at its scale.
    Input (N, in_channels, H, W) with H, W multiples of ``2 ** (n_downsample + k)``.
    """

    def __init__(
        self, in_channels: int = 2, out_channels: int = 1, *, ngf: int = 32, n_downsample: int = 3,
        n_blocks: int = 9, n_local_enhancers: int = 1, n_blocks_local: int = 3, norm: str = "instance",
    ) -> None:
        super().__init__()
        self.n_local_enhancers = n_local_enhancers
        self.global_net = GlobalGenerator(
            in_channels, out_channels, ngf=ngf * 2**n_local_enhancers, n_downsample=n_downsample,
            n_blocks=n_blocks, norm=norm,
        )
        self.global_net.head = nn.Identity()  # the enhancers produce the output
        self.down = nn.ModuleList()
        self.up = nn.ModuleList()
        for n in range(1, n_local_enhancers + 1):
            c = ngf * 2 ** (n_local_enhancers - n)
            self.down.append(nn.Sequential(
                nn.ReflectionPad2d(3), nn.Conv2d(in_channels, c, 7), _norm_layer(norm, c), nn.ReLU(True),
                nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), _norm_layer(norm, 2 * c), nn.ReLU(True),
            ))
            up: list[nn.Module] = [ResnetBlock(2 * c, norm) for _ in range(n_blocks_local)]
            up += [nn.ConvTranspose2d(2 * c, c, 3, stride=2, padding=1, output_padding=1),
                   _norm_layer(norm, c), nn.ReLU(True)]
            if n == n_local_enhancers:
                up += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
            self.up.append(nn.Sequential(*up))
        self.pool = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pyramid = [x]
        for _ in range(self.n_local_enhancers):
            pyramid.append(self.pool(pyramid[-1]))
        out = self.global_net.features(pyramid[-1])
        for n in range(1, self.n_local_enhancers + 1):
            x_n = pyramid[self.n_local_enhancers - n]
            out = self.up[n - 1](self.down[n - 1](x_n) + out)
        return out

    def extra_repr(self) -> str:
        return f"n_local_enhancers={self.n_local_enhancers}"


class NLayerDiscriminator(nn.Module):
    """70x70-style PatchGAN: returns the list of intermediate feature maps, the last being the patch scores.

    Input (N, C, H, W); output list of n_layers + 2 tensors, the last (N, 1, H', W').
    """

    def __init__(self, in_channels: int = 3, *, ndf: int = 64, n_layers: int = 3, norm: str = "instance") -> None:
        super().__init__()
        self.in_channels, self.ndf, self.n_layers = in_channels, ndf, n_layers
        kw, pad = 4, 2
        blocks: list[nn.Sequential] = [
            nn.Sequential(nn.Conv2d(in_channels, ndf, kw, stride=2, padding=pad), nn.LeakyReLU(0.2, True))
        ]
        c = ndf
        for _ in range(1, n_layers):
            c_next = min(c * 2, 512)
            blocks.append(nn.Sequential(
                nn.Conv2d(c, c_next, kw, stride=2, padding=pad), _norm_layer(norm, c_next), nn.LeakyReLU(0.2, True),
            ))
            c = c_next
        c_next = min(c * 2, 512)
        blocks.append(nn.Sequential(
            nn.Conv2d(c, c_next, kw, stride=1, padding=pad), _norm_layer(norm, c_next), nn.LeakyReLU(0.2, True),
        ))
        blocks.append(nn.Sequential(nn.Conv2d(c_next, 1, kw, stride=1, padding=pad)))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, ndf={self.ndf}, n_layers={self.n_layers}"


class MultiscaleDiscriminator(nn.Module):
    """``num_d`` PatchGAN discriminators on the input down-sampled 0, 1, ..., num_d - 1 times.

    Returns one feature list per scale (finest first), as :class:`NLayerDiscriminator` does.
    """

    def __init__(
        self, in_channels: int = 3, *, ndf: int = 64, n_layers: int = 3, num_d: int = 3, norm: str = "instance",
    ) -> None:
        super().__init__()
        self.num_d = num_d
        self.discriminators = nn.ModuleList(
            NLayerDiscriminator(in_channels, ndf=ndf, n_layers=n_layers, norm=norm) for _ in range(num_d)
        )
        self.pool = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        results = []
        for i, d in enumerate(self.discriminators):
            if i > 0:
                x = self.pool(x)
            results.append(d(x))
        return results

    def extra_repr(self) -> str:
        return f"num_d={self.num_d}"


def build_generator(config: TextureNetConfig) -> nn.Module:
    """The generator that ``config`` describes (global, or local enhancer when n_local_enhancers > 0)."""
    if config.n_local_enhancers > 0:
        return LocalEnhancer(
            config.in_channels, config.out_channels, ngf=config.ngf, n_downsample=config.n_downsample,
            n_blocks=config.n_blocks, n_local_enhancers=config.n_local_enhancers,
            n_blocks_local=config.n_blocks_local, norm=config.norm,
        )
    return GlobalGenerator(
        config.in_channels, config.out_channels, ngf=config.ngf, n_downsample=config.n_downsample,
        n_blocks=config.n_blocks, norm=config.norm,
    )


def build_discriminator(config: TextureNetConfig) -> MultiscaleDiscriminator:
    """The multi-scale discriminator; it sees the condition and the image concatenated."""
    return MultiscaleDiscriminator(
        config.in_channels + config.out_channels, ndf=config.ndf, n_layers=config.n_layers_d,
        num_d=config.num_d, norm=config.norm,
    )


def lsgan_loss(outputs: list[list[torch.Tensor]], target_is_real: bool) -> torch.Tensor:
    """Least-squares GAN loss, summed over discriminator scales (mean over patches)."""
    target = 1.0 if target_is_real else 0.0
    loss = outputs[0][-1].new_zeros(())
    for feats in outputs:
        pred = feats[-1].float()
        loss = loss + torch.mean((pred - target) ** 2)
    return loss


def feature_matching_loss(
    fake: list[list[torch.Tensor]], real: list[list[torch.Tensor]], *, n_layers: int,
) -> torch.Tensor:
    """pix2pixHD discriminator feature matching: L1 between intermediate features, weighted as in the paper."""
    num_d = len(fake)
    weight = (4.0 / (n_layers + 1)) * (1.0 / num_d)
    loss = fake[0][-1].new_zeros(())
    for f_feats, r_feats in zip(fake, real):
        for f, r in zip(f_feats[:-1], r_feats[:-1]):
            loss = loss + weight * torch.mean(torch.abs(f.float() - r.detach().float()))
    return loss
