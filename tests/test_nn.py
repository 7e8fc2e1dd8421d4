import math

import pytest
import torch

from cellinr.model.config import preset
from cellinr.nn.decoder import AutoDecoder, count_parameters, layer_dims
from cellinr.nn.rotation import (
    RotationTable,
    euler_xyz_to_matrix,
    matrix_to_quaternion,
    matrix_to_sixd,
    quaternion_to_matrix,
    random_rotations,
    rotation_angle,
    sixd_to_matrix,
)
from cellinr.nn.siren import ReLULayer, SineLayer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_reference_parameter_count():
    # every hidden layer outputs 124 units: (196+1)*124 + 7*(128+1)*124 + 2*(320+1)*124 + (128+1)*1
    expected = 197 * 124 + 7 * 129 * 124 + 2 * 321 * 124 + 129
    assert expected == 216_137
    decoder = AutoDecoder.from_config(preset("reference").model)
    assert sum(p.numel() for p in decoder.parameters()) == expected
    assert count_parameters(192, decoder.hidden, decoder.latent_in, True) == expected
    widths = [(i, o) for i, o, _ in layer_dims(192, decoder.hidden, decoder.latent_in, True)]
    assert widths[0] == (196, 124) and widths[4] == (320, 124) and widths[7] == (320, 124) and widths[-1] == (128, 1)
    assert decoder.latent_dim == 192


def test_layer_dims_rejects_too_narrow_latent_in():
    with pytest.raises(ValueError, match="layer 1"):
        layer_dims(192, [128, 128, 128], [2], True)


def test_siren_init_statistics():
    torch.manual_seed(0)
    n_in, n_out, omega = 256, 512, 30.0
    first = SineLayer(n_in, n_out, omega_0=omega, is_first=True)
    hidden = SineLayer(n_in, n_out, omega_0=omega)
    for layer, bound in ((first, 1 / n_in), (hidden, math.sqrt(6 / n_in) / omega)):
        w = layer.linear.weight
        assert w.abs().max() <= bound
        assert w.abs().max() > 0.99 * bound  # fills the interval
        assert w.var().item() == pytest.approx(bound**2 / 3, rel=0.03)  # variance of U(-b, b)
        assert abs(w.mean().item()) < 0.02 * bound
    assert "omega_0=30.0" in repr(hidden)
    # the point of the initialisation: pre-activations omega_0 * (W x + b) of a sine input stay ~N(0, 2)
    x = torch.sin(torch.rand(20000, n_in) * 2 * math.pi)
    pre = omega * hidden.linear(x)
    assert pre.std().item() == pytest.approx(math.sqrt(2.0), rel=0.2)


def test_relu_kaiming_init_and_decoder_layers():
    torch.manual_seed(0)
    layer = ReLULayer(400, 800)
    assert layer.linear.weight.std().item() == pytest.approx(math.sqrt(2 / 400), rel=0.03)
    assert torch.all(layer.linear.bias == 0)
    dec = AutoDecoder(latent_dim=8, hidden=[32, 32], latent_in=[], activation="relu")
    assert all(isinstance(layer, ReLULayer) for layer in dec.layers)
    dec = AutoDecoder(latent_dim=8, hidden=[32, 32], latent_in=[])
    assert dec.layers[0].is_first and not dec.layers[1].is_first


def test_field_matches_forward_and_concatenated_reference_formula():
    torch.manual_seed(1)
    dec = AutoDecoder(latent_dim=12, hidden=[40, 40, 60, 40], latent_in=[2], xyz_in_all=True)
    z = torch.randn(12)
    pts = torch.rand(50, 4) * 2 - 1
    rot = random_rotations(1, torch.Generator().manual_seed(3))[0]
    with torch.no_grad():
        by_field = dec.field(z, rot)(pts)
        rotated = torch.cat([pts[:, :3] @ rot.T, pts[:, 3:]], 1)
        by_forward = dec(z.expand(50, 12), rotated)
        # plain DeepSDF evaluation with concatenations
        inp = torch.cat([z.expand(50, 12), rotated], 1)
        x = inp
        lins = [l.linear for l in dec.layers] + [dec.output]
        for k, lin in enumerate(lins):
            if k in dec.latent_in:
                x = torch.cat([x, inp], 1)
            elif k:
                x = torch.cat([x, rotated], 1)
            x = lin(x)
            if k < len(lins) - 1:
                x = torch.sin(30.0 * x)
        grouped = dec.forward_frames(z[None], rotated[None])[0]
    torch.testing.assert_close(by_field, by_forward, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(by_field, x[:, 0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grouped, by_forward, rtol=1e-5, atol=1e-6)
    assert by_field.shape == (50,)


def test_rotation_round_trips():
    g = torch.Generator().manual_seed(0)
    r = random_rotations(500, g, dtype=torch.float64)
    torch.testing.assert_close(r @ r.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(500, 3, 3), atol=1e-6, rtol=0)
    assert torch.allclose(torch.linalg.det(r), torch.ones(500, dtype=torch.float64), atol=1e-6)
    torch.testing.assert_close(quaternion_to_matrix(matrix_to_quaternion(r)), r, atol=1e-10, rtol=0)
    torch.testing.assert_close(sixd_to_matrix(matrix_to_sixd(r)), r, atol=1e-10, rtol=0)
    q = torch.nn.functional.normalize(torch.randn(200, 4, generator=g, dtype=torch.float64), dim=1)
    q = torch.where(q[:, :1] < 0, -q, q)
    torch.testing.assert_close(matrix_to_quaternion(quaternion_to_matrix(q)), q, atol=1e-10, rtol=0)
    # near-180-degree rotations (w ~ 0) take the other branches
    flip = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.6, 0.8]], dtype=torch.float64)
    torch.testing.assert_close(quaternion_to_matrix(matrix_to_quaternion(quaternion_to_matrix(flip))),
                               quaternion_to_matrix(flip), atol=1e-12, rtol=0)


def test_euler_xyz_and_angles():
    a = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
    c, s = torch.cos(a), torch.sin(a)
    rx = torch.tensor([[1, 0, 0], [0, c[0], -s[0]], [0, s[0], c[0]]], dtype=torch.float64)
    ry = torch.tensor([[c[1], 0, s[1]], [0, 1, 0], [-s[1], 0, c[1]]], dtype=torch.float64)
    rz = torch.tensor([[c[2], -s[2], 0], [s[2], c[2], 0], [0, 0, 1]], dtype=torch.float64)
    torch.testing.assert_close(euler_xyz_to_matrix(a), rx @ ry @ rz)
    assert rotation_angle(rz).item() == pytest.approx(0.5)
    assert rotation_angle(rx, rx).item() == pytest.approx(0.0, abs=1e-7)
    assert rotation_angle(rx @ rx @ rx @ rx @ rx @ rx @ rx @ rx @ rx @ rx).item() == pytest.approx(3.0)
    assert rotation_angle(torch.diag(torch.tensor([1.0, -1.0, -1.0]))).item() == pytest.approx(math.pi)


def test_haar_uniform_angles():
    # the angle of a Haar-uniform rotation has density (1 - cos t) / pi: mean pi/2 + 2/pi
    r = random_rotations(20000, torch.Generator().manual_seed(5))
    angles = rotation_angle(r.double())
    assert angles.mean().item() == pytest.approx(math.pi / 2 + 2 / math.pi, abs=0.02)


@pytest.mark.parametrize("param", ["quaternion", "6d"])
def test_rotation_table_starts_at_identity_and_learns(param):
    table = RotationTable(3, param)
    torch.testing.assert_close(table(), torch.eye(3).expand(3, 3, 3))
    target = random_rotations(1, torch.Generator().manual_seed(2))[0]
    target = quaternion_to_matrix(matrix_to_quaternion(target) * torch.tensor([1.0, 0.3, 0.3, 0.3]))  # <~90 deg
    opt = torch.optim.Adam(table.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        loss = (table(torch.tensor([1])) - target).square().sum()
        loss.backward()
        opt.step()
    assert rotation_angle(table(torch.tensor([1]))[0], target).item() < 1e-2


@pytest.mark.parametrize("param", ["quaternion", "6d"])
def test_rotation_table_set_matrices(param):
    table = RotationTable(4, param)
    m = random_rotations(4, torch.Generator().manual_seed(3))  # any angles, up to 180 degrees
    table.set_matrices(m)
    torch.testing.assert_close(table(), m, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="expected"):
        table.set_matrices(m[:2])
