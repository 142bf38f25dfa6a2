"""Weight interop: after loading a peer's weights our logits equal the peer's; loading is strict and safe."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision

from compscale import create_model, load_state_dict, load_weights, save_weights
from compscale.errors import UserError
from compscale.models.weights import convert_state_dict, detect_layout, read_state_dict
from conftest import calibrate_batchnorm

PEERS = [
    ("efficientnet_b0", lambda: timm.create_model("efficientnet_b0"), "timm", 64),
    ("efficientnet_b3", lambda: timm.create_model("efficientnet_b3"), "timm", 64),
    # odd size: SAME pads asymmetrically
    ("tf_efficientnet_b0", lambda: timm.create_model("tf_efficientnet_b0"), "timm", 67),
    ("efficientnet_lite0", lambda: timm.create_model("tf_efficientnet_lite0"), "timm", 67),
    ("efficientnet_b0", lambda: torchvision.models.efficientnet_b0(), "torchvision", 64),
]


@pytest.mark.parametrize("ours, make_peer, layout, size", PEERS, ids=[f"{p[0]}-{p[2]}" for p in PEERS])
def test_logits_equal_peer_after_transfer(ours, make_peer, layout, size):
    torch.manual_seed(0)
    peer = make_peer()
    calibrate_batchnorm(peer, resolution=size)
    model = create_model(ours)
    assert detect_layout(model, peer.state_dict()) == layout
    load_state_dict(model, peer.state_dict())
    model.eval()
    x = torch.randn(2, 3, size, size + 8)
    with torch.no_grad():
        theirs, mine = peer(x), model(x)
    scale = theirs.abs().max().item()
    assert scale > 0.1, "logits collapsed: the comparison would be meaningless"
    assert (mine - theirs).abs().max().item() <= 1e-5 * scale


def test_wrong_architecture_names_first_mismatched_key():
    peer = timm.create_model("efficientnet_b1")
    model = create_model("efficientnet_b0")
    with pytest.raises(UserError, match=r"unexpected key 'blocks\.0\.1\."):
        load_state_dict(model, peer.state_dict())
    with pytest.raises(UserError, match=r"conv_stem.weight' has shape \(40, 3, 3, 3\)"):
        load_state_dict(model, timm.create_model("efficientnet_b3").state_dict(), layout="timm")
    state = timm.create_model("efficientnet_b0").state_dict()
    del state["blocks.2.1.conv_dw.weight"]
    with pytest.raises(UserError, match="missing key 'blocks.2.1.conv_dw.weight'"):
        load_state_dict(model, state)


def test_port_layout_round_trip_and_missing_bn_counter():
    """The `_conv_stem/_blocks.N/_fc` layout (the Lite weight packages) without num_batches_tracked."""
    torch.manual_seed(0)
    src = create_model("efficientnet_lite0")
    calibrate_batchnorm(src)
    from compscale.models.weights import _key_map

    names = _key_map(src, "efficientnet_pytorch")
    ported = {names[k]: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert "_blocks.15._project_conv.weight" in ported and "_blocks.0._expand_conv.weight" not in ported
    dst = create_model("efficientnet_lite0")
    load_state_dict(dst, ported)
    for k, v in src.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(dst.state_dict()[k], v)


def test_safetensors_round_trip_keeps_spec(tmp_path):
    torch.manual_seed(0)
    model = create_model("efficientnet_b0", num_classes=5)
    path = tmp_path / "w.safetensors"
    save_weights(model, path)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        assert '"num_classes": 5' in f.metadata()["spec"]
    other = create_model("efficientnet_b0", num_classes=5)
    load_weights(other, path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    assert not list(tmp_path.glob("*.tmp"))


def test_corrupt_and_untrusted_files_are_refused(tmp_path):
    model = create_model("efficientnet_b0")
    truncated = tmp_path / "t.safetensors"
    save_weights(model, truncated)
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with pytest.raises(UserError, match="not a readable safetensors"):
        read_state_dict(truncated)
    with pytest.raises(UserError, match="not found"):
        read_state_dict(tmp_path / "missing.pth")

    class Evil:
        def __reduce__(self):
            return (exec, ("open(%r, 'w').write('pwned')" % str(tmp_path / "pwned"),))

    evil = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, evil)
    with pytest.raises(UserError, match="only tensors are accepted"):
        read_state_dict(evil)
    assert not (tmp_path / "pwned").exists()


def test_convert_unknown_layout():
    with pytest.raises(UserError, match="unknown weight layout"):
        convert_state_dict(create_model("efficientnet_b0"), {}, layout="keras")
