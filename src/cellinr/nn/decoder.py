"""The auto-decoder f(z, x, y, z, t) -> SDF (DeepSDF layout with SIREN layers).

Park et al., "DeepSDF", CVPR 2019; Wiesner et al., MICCAI 2022 / MedIA 2024 (the 3D+t version with
sine activations). The input of linear layer 0 is [z; x; y; z; t]; the full input is concatenated
again before the layers listed in ``latent_in``; with ``xyz_in_all`` the coordinates (x, y, z, t)
are concatenated to the input of every other layer (also the output layer). Layer output widths
shrink so that each concatenated input has the nominal width ``hidden[k]`` (DeepSDF convention),
see :func:`layer_dims`.

The weights of every layer that receives z are stored whole (column order as in the reference:
[previous activations, z, x, y, z, t]) but applied split by columns: the latent part is a
constant per sequence, so :meth:`AutoDecoder.field` computes it once per sequence and the
per-point cost only involves the coordinate columns.

Parameter count of the reference architecture (L = 192, nominal widths
[128,128,128,320,128,128,320,128,128,128], latent_in (4, 7), xyz_in_all):
every hidden layer outputs 124 units (= 128 - 4 or 320 - (L + 4)), so with
``params = sum_k (in_k + 1) * out_k``:
lin0 (196+1)*124 + 7 layers (128+1)*124 + lin4, lin7 (320+1)*124 + output (128+1)*1
= 24,428 + 111,972 + 79,608 + 129 = 216,137.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cellinr.nn.siren import ReLULayer, SineLayer

N_COORDS = 4  # x, y, z, t


def layer_dims(
    latent_dim: int, hidden: Sequence[int], latent_in: Sequence[int] = (), xyz_in_all: bool = True
) -> list[tuple[int, int, tuple[str, ...]]]:
    """(in_features, out_features, input segments) of every linear layer (hidden layers, then output).

    The segments name the concatenated input parts in column order: ``x`` (previous layer),
    ``latent`` (z) and ``xyzt``. Raises ValueError if a layer would get no outputs.
    """
    d0 = latent_dim + N_COORDS
    dims = [d0, *hidden, 1]
    n = len(hidden)  # index of the output layer
    out_list = []
    for k in range(n + 1):
        if k + 1 in latent_in:
            out = dims[k + 1] - d0
        else:
            out = dims[k + 1] - (N_COORDS if xyz_in_all and k != n else 0)
        if out <= 0:
            raise ValueError(
                f"layer {k} would have {out} outputs: the nominal width {dims[k + 1]} must exceed "
                f"{d0 if k + 1 in latent_in else N_COORDS} (concatenated inputs)"
            )
        out_list.append(out)
    layers = []
    for k in range(n + 1):
        if k == 0:
            segments = ("latent", "xyzt")
            width = d0
        elif k in latent_in:
            segments = ("x", "latent", "xyzt")
            width = out_list[k - 1] + d0
        elif xyz_in_all:
            segments = ("x", "xyzt")
            width = out_list[k - 1] + N_COORDS
        else:
            segments = ("x",)
            width = out_list[k - 1]
        layers.append((width, out_list[k], segments))
    return layers


def count_parameters(latent_dim: int, hidden: Sequence[int], latent_in: Sequence[int] = (), xyz_in_all: bool = True) -> int:
    """Number of network parameters, ``sum_k (in_k + 1) * out_k`` (the codes are not counted)."""
    return sum((i + 1) * o for i, o, _ in layer_dims(latent_dim, hidden, latent_in, xyz_in_all))


class AutoDecoder(nn.Module):
    """f(z, x, y, z, t) -> SDF.

    Parameters
    ----------
    latent_dim : code length L.
    hidden : nominal widths of the hidden layers.
    latent_in : linear-layer indices that receive the full input [z; xyzt] again.
    xyz_in_all : concatenate xyzt to the input of every other layer.
    activation : ``sine`` (SIREN, with SIREN initialisation) or ``relu`` (Kaiming initialisation).
    omega_0 : SIREN frequency factor.
    omega_first : omega_0 of the first layer (None: ``omega_0``).
    coord_freq, time_freq : if given, the x, y, z (resp. t) weight columns of the first layer are
        initialised U(-f / omega_first, f / omega_first), so the first layer's sines have angular
        frequencies up to ``f`` radians per coordinate unit (the cube is [-1, 1]). None keeps the
        SIREN first-layer rule U(-1/n, 1/n) with n the whole fan-in (L + 4), which with a latent
        code concatenated gives only omega_first / (L + 4) rad per unit (0.44 for L = 64): an almost
        linear first layer, hence smooth shapes. Sine activation only.
    """

    def __init__(
        self,
        latent_dim: int = 192,
        hidden: Sequence[int] = (128, 128, 128, 320, 128, 128, 320, 128, 128, 128),
        latent_in: Sequence[int] = (4, 7),
        xyz_in_all: bool = True,
        activation: str = "sine",
        omega_0: float = 30.0,
        omega_first: float | None = None,
        coord_freq: float | None = None,
        time_freq: float | None = None,
    ):
        super().__init__()
        if activation not in ("sine", "relu"):
            raise ValueError(f"activation must be 'sine' or 'relu', got {activation!r}")
        self.latent_dim = int(latent_dim)
        self.hidden = [int(h) for h in hidden]
        self.latent_in = [int(k) for k in latent_in]
        self.xyz_in_all = bool(xyz_in_all)
        self.activation = activation
        self.omega_0 = float(omega_0)
        self.omega_first = self.omega_0 if omega_first is None else float(omega_first)
        self.coord_freq = None if coord_freq is None else float(coord_freq)
        self.time_freq = None if time_freq is None else float(time_freq)
        #: dtype of the hidden x hidden products in :meth:`evaluate` (None: the parameters' dtype);
        #: training sets it for ``train.precision: bf16-hidden``; not saved with the model
        self.hidden_dtype: torch.dtype | None = None
        spec = layer_dims(self.latent_dim, self.hidden, self.latent_in, self.xyz_in_all)
        layers = []
        for k, (fan_in, fan_out, _) in enumerate(spec[:-1]):
            if activation == "sine":
                omega = self.omega_first if k == 0 else self.omega_0
                layers.append(SineLayer(fan_in, fan_out, omega_0=omega, is_first=k == 0))
            else:
                layers.append(ReLULayer(fan_in, fan_out))
        self.layers = nn.ModuleList(layers)
        self.output = nn.Linear(spec[-1][0], 1)
        # column slices of each layer's weight per input segment
        self._slices: list[dict[str, slice]] = []
        for k, (_, _, segments) in enumerate(spec):
            start, cols = 0, {}
            for seg in segments:
                width = {"x": spec[k - 1][1] if k else 0, "latent": self.latent_dim, "xyzt": N_COORDS}[seg]
                cols[seg] = slice(start, start + width)
                start += width
            self._slices.append(cols)
        self._init_first_coords()
        self.reset_output()

    @classmethod
    def from_config(cls, config) -> AutoDecoder:
        """Build from a :class:`cellinr.model.config.ModelConfig`."""
        return cls(
            latent_dim=config.latent_dim, hidden=config.hidden, latent_in=config.latent_in,
            xyz_in_all=config.xyz_in_all, activation=config.activation, omega_0=config.omega_0,
            omega_first=config.omega_first, coord_freq=config.coord_freq, time_freq=config.time_freq,
        )

    def _init_first_coords(self) -> None:
        """Frequency-controlled init of the first layer's coordinate columns (``coord_freq``/``time_freq``)."""
        if self.activation != "sine":
            return
        w = self.layers[0].linear.weight
        xyzt = self._slices[0]["xyzt"]
        with torch.no_grad():
            for cols, freq in ((slice(xyzt.start, xyzt.start + 3), self.coord_freq),
                               (slice(xyzt.start + 3, xyzt.stop), self.time_freq)):
                if freq is not None:
                    w[:, cols].uniform_(-freq / self.omega_first, freq / self.omega_first)

    def reset_output(self) -> None:
        """Initialise the output layer (SIREN: like a hidden sine layer; ReLU: nn.Linear default)."""
        self.output.reset_parameters()
        if self.activation == "sine":
            bound = (6.0 / self.output.in_features) ** 0.5 / self.omega_0
            with torch.no_grad():
                self.output.weight.uniform_(-bound, bound)

    def reset_parameters(self) -> None:
        for layer in self.layers:
            layer.reset_parameters()
        self._init_first_coords()
        self.reset_output()

    def _linears(self) -> list[nn.Linear]:
        return [layer.linear for layer in self.layers] + [self.output]

    # -- evaluation ------------------------------------------------------------------------
    def latent_terms(self, latent: torch.Tensor) -> list[torch.Tensor | None]:
        """Per layer: the latent columns' contribution plus bias, (..., out_k), or None.

        ``latent`` is (..., L); the result broadcasts against per-point pre-activations.
        """
        terms: list[torch.Tensor | None] = []
        for lin, cols in zip(self._linears(), self._slices):
            if "latent" in cols:
                terms.append(F.linear(latent, lin.weight[:, cols["latent"]], lin.bias))
            else:
                terms.append(None)
        return terms

    def evaluate(self, xyzt: torch.Tensor, terms: Sequence[torch.Tensor | None]) -> torch.Tensor:
        """SDF at coordinates ``xyzt`` (..., 4) given :meth:`latent_terms`; returns (...).

        Works on the points flattened to rows; the latent terms broadcast against (..., out).
        """
        lead = xyzt.shape[:-1]
        rows = xyzt.reshape(-1, N_COORDS)
        x = None
        linears = self._linears()
        last = len(linears) - 1
        for k, (lin, cols) in enumerate(zip(linears, self._slices)):
            term = terms[k]
            if "xyzt" in cols:
                base = F.linear(rows, lin.weight[:, cols["xyzt"]], lin.bias if term is None else None)
                if term is not None:
                    base = (base.view(*lead, -1) + term).reshape(rows.shape[0], -1)
                # fused multiply-add: base + x @ W_x.T
                if x is None:
                    pre = base
                elif self.hidden_dtype is None:
                    pre = torch.addmm(base, x, lin.weight[:, cols["x"]].T)
                else:
                    pre = self._low_addmm(base, x, lin.weight[:, cols["x"]], k == last)
            elif self.hidden_dtype is None:
                pre = F.linear(x, lin.weight[:, cols["x"]], lin.bias)
            else:
                pre = self._low_addmm(lin.bias.expand(x.shape[0], -1), x, lin.weight[:, cols["x"]], k == last)
            x = self.layers[k].activation(pre) if k < last else pre
        return x.reshape(lead)

    def _low_addmm(self, base: torch.Tensor, x: torch.Tensor, w: torch.Tensor, output: bool) -> torch.Tensor:
        """``base + x @ w.T`` for a layer after the first one with ``hidden_dtype`` (bf16).

        The first layer (coordinates, latent terms) stays fp32 and ``base`` (coordinate columns,
        latent terms, bias) is computed in fp32; the product and, for hidden layers, the sum and
        the sine are in bf16 (about 0.4 % relative error on sine arguments of a few radians); the
        output layer's sum is fp32.
        """
        hd = self.hidden_dtype
        if output:
            return base + torch.mm(x.to(hd), w.T.to(hd)).float()
        return torch.addmm(base.to(hd), x.to(hd), w.T.to(hd))

    def forward(self, latent: torch.Tensor, xyzt: torch.Tensor) -> torch.Tensor:
        """SDF per point: ``latent`` (B, L), ``xyzt`` (B, 4) -> (B,)."""
        return self.evaluate(xyzt, self.latent_terms(latent))

    def forward_frames(self, latent: torch.Tensor, xyzt: torch.Tensor) -> torch.Tensor:
        """SDF of G point sets sharing a code each: ``latent`` (G, L), ``xyzt`` (G, n, 4) -> (G, n)."""
        terms = [None if t is None else t[:, None, :] for t in self.latent_terms(latent)]
        return self.evaluate(xyzt, terms)

    def field(
        self, latent: torch.Tensor, rotation: torch.Tensor | None = None, scale: float = 1.0
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """The SDF of one sequence as a function of (N, 4) points (x, y, z, t) -> (N,).

        The latent part of every layer that receives z is computed here, once. ``rotation``
        (3, 3) is applied to the query coordinates first: f(z, R x, t), i.e. ``xyz @ R.T``; with
        ``scale`` s the shape is s times larger and its SDF stays a distance: ``s f(z, R x / s, t)``.
        Gradients flow (to ``latent`` too) under the caller's grad mode.
        """
        ref = self.output.weight
        latent = latent.to(device=ref.device, dtype=ref.dtype).reshape(self.latent_dim)
        terms = self.latent_terms(latent)
        rot_t = None if rotation is None else rotation.to(device=ref.device, dtype=ref.dtype).T
        scale = float(scale)
        if rot_t is not None and scale != 1.0:
            rot_t = rot_t / scale
        elif scale != 1.0:
            rot_t = torch.eye(3, device=ref.device, dtype=ref.dtype) / scale

        def sdf(xyzt: torch.Tensor) -> torch.Tensor:
            if rot_t is not None:
                xyzt = torch.cat([xyzt[..., :3] @ rot_t, xyzt[..., 3:]], dim=-1)
            out = self.evaluate(xyzt, terms)
            return out * scale if scale != 1.0 else out

        return sdf

    def extra_repr(self) -> str:
        return (
            f"latent_dim={self.latent_dim}, hidden={self.hidden}, latent_in={self.latent_in}, "
            f"xyz_in_all={self.xyz_in_all}, activation={self.activation}, omega_0={self.omega_0}, "
            f"omega_first={self.omega_first}, coord_freq={self.coord_freq}, time_freq={self.time_freq}"
        )
