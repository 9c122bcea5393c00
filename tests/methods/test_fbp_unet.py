"""The fbp-unet method: the untrained network is FBP, weights round trip, view-count warning."""
import pytest
import torch

from ctresample.methods.fbp_unet import reconstruct_fbp_unet
from ctresample.models.fbp_unet import FBPConvNet, load_fbp_unet, training_meta
from operators import ParallelBeamGeometry, fbp, hu_to_mu, mu_to_hu, projector_for


def test_initial_network_is_fbp(tmp_path):
    geom = ParallelBeamGeometry(image_size=32, n_views=10)
    hu = torch.full((1, 1, 32, 32), -1000.0)
    hu[..., 8:24, 8:24] = 100.0
    y = projector_for(geom)(hu_to_mu(hu))
    net = FBPConvNet(channels=(8, 16), norm_groups=4).eval()
    out = reconstruct_fbp_unet(y, geom, net=net)
    ref = mu_to_hu(fbp(y, geom, "ram-lak")).clamp(-1024, 3071)
    torch.testing.assert_close(out.image, ref, atol=0.05, rtol=1e-5)
    # weights round trip through the save_pretrained layout
    net.save_pretrained(tmp_path / "w")
    again = load_fbp_unet(tmp_path / "w")
    assert again.config.channels == [8, 16]


def test_weights_record_their_view_count_and_other_counts_warn(tmp_path):
    net = FBPConvNet(channels=(8, 16), norm_groups=4).eval()
    net.save_pretrained(tmp_path / "w")
    (tmp_path / "w" / "fbp_unet_meta.json").write_text('{"n_views": 25}')
    assert training_meta(tmp_path / "w") == {"n_views": 25}
    geom = ParallelBeamGeometry(image_size=32, n_views=10)
    y = projector_for(geom)(hu_to_mu(torch.full((1, 1, 32, 32), -1000.0)))
    with pytest.warns(UserWarning, match="trained for 25 views"):
        reconstruct_fbp_unet(y, geom, config={"weights": str(tmp_path / "w")})

