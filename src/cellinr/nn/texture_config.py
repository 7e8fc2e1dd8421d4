"""Sizes of the pix2pixHD texture networks (a plain dataclass: no torch needed to read or check it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

#: Named texture-network sizes: ``small`` (CPU-friendly) and ``pix2pixhd`` (the paper's defaults).
TEXTURE_PRESETS = ("small", "pix2pixhd")

NORMS = ("instance", "batch", "none")


@dataclass
class TextureNetConfig:
    """Sizes of the texture generator and discriminator."""

    in_channels: int = 2
    """Condition channels: foreground mask and instance-boundary map."""
    out_channels: int = 1
    """Output image channels (1: grayscale)."""
    ngf: int = 16
    """Filters of the first generator layer (pix2pixHD: 64)."""
    n_downsample: int = 2
    """Stride-2 down-sampling steps of the global generator (pix2pixHD: 4)."""
    n_blocks: int = 6
    """Residual blocks of the global generator (pix2pixHD: 9)."""
    n_local_enhancers: int = 0
    """Local enhancers wrapped around the global generator (pix2pixHD 'local': 1)."""
    n_blocks_local: int = 3
    """Residual blocks per local enhancer."""
    ndf: int = 16
    """Filters of the first discriminator layer (pix2pixHD: 64)."""
    n_layers_d: int = 3
    """Stride-2 layers of each PatchGAN discriminator."""
    num_d: int = 2
    """Number of discriminators at successively halved scales (pix2pixHD: 3)."""
    norm: str = "instance"
    """Normalisation layer: instance, batch or none."""

    def __post_init__(self) -> None:
        from cellinr.errors import ConfigError

        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", int):
                if not isinstance(value, int) or isinstance(value, bool):
                    raise ConfigError(f"texture config: {f.name} must be an integer, got {value!r}")
                minimum = 0 if f.name in ("n_local_enhancers", "n_blocks", "n_downsample", "n_blocks_local") else 1
                if value < minimum:
                    raise ConfigError(f"texture config: {f.name} must be >= {minimum}, got {value}")
        if self.norm not in NORMS:
            raise ConfigError(f"texture config: norm must be one of {', '.join(NORMS)}, got {self.norm!r}")

    @classmethod
    def pix2pixhd(cls, **overrides) -> TextureNetConfig:
        """The pix2pixHD defaults (global generator ngf 64, 4 down-samplings, 9 blocks; 3 discriminators)."""
        values = dict(ngf=64, n_downsample=4, n_blocks=9, ndf=64, n_layers_d=3, num_d=3)
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_dict(cls, data: dict) -> TextureNetConfig:
        from cellinr._util.typed_config import from_mapping

        return from_mapping(cls, data, where="texture config")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this (padding is added by the callers)."""
        return 2 ** (self.n_downsample + self.n_local_enhancers)

    @classmethod
    def preset(cls, name: str) -> TextureNetConfig:
        """The sizes of a named preset (:data:`TEXTURE_PRESETS`)."""
        from cellinr.errors import ConfigError

        if name not in TEXTURE_PRESETS:
            raise ConfigError(f"texture preset {name!r}: choose one of {', '.join(TEXTURE_PRESETS)}")
        return cls.pix2pixhd() if name == "pix2pixhd" else cls()
