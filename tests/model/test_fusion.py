"""The dual-input network and its ablation variants."""

import pytest
import torch

from skinlesion.model import create_model
from skinlesion.model.fusion import FusionNet


@pytest.mark.parametrize("inputs", ["image+metadata", "image", "metadata"])
def test_every_variant_gives_one_logit_per_class(inputs):
    torch.manual_seed(0)
    backbone = None if inputs == "metadata" else create_model("efficientnet_lite0", pretrained=False)
    net = FusionNet(backbone, n_metadata=14, n_classes=8, inputs=inputs).eval()
    images, meta = torch.randn(3, 3, 48, 64), torch.randn(3, 14)
    with torch.no_grad():
        logits = net(images, meta)
    assert logits.shape == (3, 8) and torch.isfinite(logits).all()
    assert inputs.split("+")[0] in net.summary()


def test_metadata_changes_the_answer_only_when_used():
    torch.manual_seed(0)
    images, meta = torch.randn(2, 3, 48, 64), torch.randn(2, 14)
    for inputs, should_change in [("image+metadata", True), ("image", False)]:
        net = FusionNet(create_model("efficientnet_lite0", pretrained=False), n_metadata=14,
                        n_classes=8, inputs=inputs).eval()
        with torch.no_grad():
            changed = not torch.allclose(net(images, meta), net(images, meta + 1))
        assert changed == should_change


def test_cached_activations_give_the_same_logits_as_images():
    torch.manual_seed(0)
    backbone = create_model("efficientnet_lite0", pretrained=False)
    net = FusionNet(backbone, n_metadata=14, n_classes=8).eval()
    images, meta = torch.randn(2, 3, 48, 64), torch.randn(2, 14)
    with torch.no_grad():
        acts = backbone(images, 0, backbone.default_cut)
        assert torch.allclose(net(images, meta), net(acts, meta, start=backbone.default_cut))


def test_wrong_variant_and_backbone_combination_is_rejected():
    with pytest.raises(ValueError, match="inputs"):
        FusionNet(None, n_metadata=14, n_classes=8, inputs="image")
    with pytest.raises(ValueError, match="inputs must be one of"):
        FusionNet(None, n_metadata=14, n_classes=8, inputs="text")


def test_the_head_gets_a_hidden_layer_only_when_asked():
    torch.manual_seed(0)
    backbone = create_model("efficientnet_lite0", pretrained=False)
    single = FusionNet(backbone, n_metadata=14, n_classes=8)
    # the default is the single linear head of every version saved before head_hidden existed
    assert {k for k in single.state_dict() if not k.startswith(("backbone.", "meta."))} == {
        "fc.weight", "fc.bias"}
    assert single.fc.in_features == backbone.num_features + 32
    wide = FusionNet(backbone, n_metadata=14, n_classes=8, head_hidden=64).eval()
    assert wide.state_dict()["hidden.0.weight"].shape == (64, backbone.num_features + 32)
    assert wide.fc.in_features == 64 and "->64 + ReLU" in wide.summary()
    with torch.no_grad():
        logits = wide(torch.randn(3, 3, 48, 64), torch.randn(3, 14))
    assert logits.shape == (3, 8) and torch.isfinite(logits).all()
    with pytest.raises(ValueError, match="head_hidden"):
        FusionNet(None, n_metadata=14, n_classes=8, inputs="metadata", head_hidden=-1)
