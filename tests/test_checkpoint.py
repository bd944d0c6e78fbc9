import pytest
import torch

from retinanet.checkpoint import CHECKPOINT_FORMAT, load_optimizer_state, save_checkpoint
from retinanet.coco_names import CLASS_NAME_ALIASES, COCO_CLASS_NAMES
from retinanet.errors import UserError
from retinanet.hub import load_model
from retinanet.model import RetinaNet
from retinanet.state_dicts import class_index_map, load_weights
from retinanet.training import build_optimizer
from tests.helpers import logical_order

A = 9  # anchors per location


def tiny(num_classes, depth=18):
    return RetinaNet(num_classes=num_classes, depth=depth, feature_size=16)


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.fixture
def coco_model_file(tmp_path):
    model = tiny(80)
    with torch.no_grad(), logical_order(model):
        model.classificationModel.output.weight.normal_()
        model.classificationModel.output.bias.normal_()
    path = tmp_path / "bare.pt"
    torch.save(model.state_dict(), path)
    return model, str(path)


def test_bare_module_prefixed_and_old_torch_dicts_load(coco_model_file, tmp_path):
    model, bare = coco_model_file
    loaded, names = load_model(bare)
    assert names == list(COCO_CLASS_NAMES)
    assert_same_weights(model, loaded)

    prefixed = tmp_path / "ddp.pt"
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, prefixed)
    assert_same_weights(model, load_model(str(prefixed))[0])

    old = tmp_path / "old.pt"
    torch.save({k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}, old)
    assert_same_weights(model, load_model(str(old))[0])


def test_our_checkpoint_maps_classes_by_name(tmp_path):
    model = tiny(3)
    with torch.no_grad():
        model.classificationModel.output.bias.copy_(torch.arange(27.0))
    path = tmp_path / "ours.pt"
    save_checkpoint(str(path), {"format": CHECKPOINT_FORMAT, "model": model.state_dict(),
                                "class_names": ["person", "head", "car"], "model_args": model.model_args()})
    reordered = tiny(3)
    load_weights(reordered, str(path), ["car", "person", "head"])
    bias = reordered.classificationModel.output.bias.reshape(A, 3)
    assert bias[0].tolist() == [2.0, 0.0, 1.0] and bias[1].tolist() == [5.0, 3.0, 4.0]
    loaded, names = load_model(str(path))
    assert names == ["person", "head", "car"]
    assert_same_weights(model, loaded)


@pytest.mark.parametrize("target", ["coco_with_head", "person_head"])
def test_class_head_surgery_by_name(coco_model_file, target):
    source, path = coco_model_file
    aliases = {v: k for k, v in CLASS_NAME_ALIASES.items()}
    if target == "coco_with_head":
        names = [aliases.get(n, n) for n in COCO_CLASS_NAMES] + ["head"]
    else:
        names = ["person", "head"]
    model = tiny(len(names))
    initial_head = model.classificationModel.output.weight.detach().clone()
    logs = []
    report = load_weights(model, path, names, allow_class_change=True, log=logs.append)
    assert report["initialised"] == ["head"]
    assert len(report["copied"]) == len(names) - 1
    assert "head" in logs[0]
    k_new = len(names)
    old_w = source.classificationModel.output.weight.reshape(A, 80, -1)
    new_w = model.classificationModel.output.weight.detach().reshape(A, k_new, -1)
    old_b = source.classificationModel.output.bias.reshape(A, 80)
    new_b = model.classificationModel.output.bias.detach().reshape(A, k_new)
    for j, name in enumerate(names[:-1]):
        i = COCO_CLASS_NAMES.index(CLASS_NAME_ALIASES.get(name, name))
        assert torch.equal(new_w[:, j], old_w[:, i]) and torch.equal(new_b[:, j], old_b[:, i])
    assert torch.equal(new_w[:, -1], initial_head.reshape(A, k_new, -1)[:, -1])
    assert torch.allclose(torch.sigmoid(new_b[:, -1]), torch.full((A,), 0.01))
    assert torch.equal(model.fpn.P3_1.weight, source.fpn.P3_1.weight)
    assert torch.equal(model.regressionModel.output.weight, source.regressionModel.output.weight)


def test_class_index_map_with_aliases():
    assert class_index_map(COCO_CLASS_NAMES, ["tvmonitor", "head", "Person"]) == [62, -1, 0]


def test_bad_checkpoints_give_one_line_errors(coco_model_file, tmp_path):
    model, bare = coco_model_file
    with pytest.raises(UserError, match="classes .*person.* differ from the class list .*head"):
        load_weights(tiny(2), bare, ["person", "head"])
    with pytest.raises(UserError, match="ResNet-18 RetinaNet, --depth 50 was given"):
        load_model(bare, depth=50)
    with pytest.raises(UserError, match="ResNet-18 RetinaNet, the model is ResNet-34"):
        load_weights(tiny(80, depth=34), bare, list(COCO_CLASS_NAMES))
    with pytest.raises(UserError, match="checkpoint file not found"):
        load_model(str(tmp_path / "missing.pt"))

    text = tmp_path / "notes.pt"
    text.write_text("person,0\nhead,1\n")
    with pytest.raises(UserError, match="not a readable PyTorch checkpoint"):
        load_model(str(text))

    data = open(bare, "rb").read()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated or corrupt"):
        load_model(str(truncated))

    whole = tmp_path / "whole_model.pt"
    torch.save(tiny(2), whole)
    with pytest.raises(UserError, match="pickled Python objects"):
        load_model(str(whole))

    classifier = tmp_path / "resnet_classifier.pt"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}, classifier)
    with pytest.raises(UserError, match="not a RetinaNet checkpoint"):
        load_model(str(classifier))

    unnamed = tmp_path / "unnamed3.pt"
    torch.save(tiny(3).state_dict(), unnamed)
    with pytest.raises(UserError, match="does not record its 3 class names"):
        load_model(str(unnamed))


def test_save_checkpoint_is_atomic(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(str(path), {"a": torch.ones(2)})

    class Boom:
        def __reduce__(self):
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        save_checkpoint(str(path), {"a": Boom()})
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def channels_last_training_step(model, optimizer, seed):
    """One fused-Adam step of a channels-last model, as train.py takes it."""
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    boxes = torch.tensor([[8.0, 8.0, 40.0, 48.0]])
    targets = [{"boxes": boxes, "labels": torch.tensor([1])}, {"boxes": boxes + 10, "labels": torch.tensor([0])}]
    optimizer.zero_grad()
    losses = model(images.contiguous(memory_format=torch.channels_last), targets)
    loss = losses["classification"] + losses["regression"]
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()


def trained_channels_last(seed=0):
    torch.manual_seed(seed)
    model = tiny(2).to(memory_format=torch.channels_last).train()
    optimizer = build_optimizer(model, "adam", lr=1e-4, weight_decay=0.0)
    channels_last_training_step(model, optimizer, seed=1)
    return model, optimizer


def all_tensors(obj):
    if torch.is_tensor(obj):
        return [obj]
    values = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else []
    return [tensor for value in values for tensor in all_tensors(value)]


def test_checkpoint_of_a_channels_last_model_holds_contiguous_tensors(tmp_path):
    model, optimizer = trained_channels_last()
    assert not model.layer1[0].conv1.weight.is_contiguous()  # what the file must not inherit
    checkpoint = {"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "class_names": ["person", "head"],
                  "model_args": model.model_args(), "optimizer": optimizer.state_dict()}
    path = tmp_path / "last.pt"
    save_checkpoint(str(path), checkpoint)

    loaded = torch.load(path, weights_only=True)  # what another project does with the file
    tensors = all_tensors(loaded)
    assert len(tensors) > 2 * len(checkpoint["model"])  # weights and Adam moments
    for tensor in tensors:
        assert tensor.is_contiguous()
        tensor.view(-1)
    for key, value in checkpoint["model"].items():
        assert torch.equal(loaded["model"][key], value), key
    exp_avg = loaded["optimizer"]["state"][0]["exp_avg"]
    assert torch.equal(exp_avg, optimizer.state[model.conv1.weight]["exp_avg"]) and exp_avg.dim() == 4
    # The live model and optimizer keep their layout, and the state dict its module versions.
    assert not model.layer1[0].conv1.weight.is_contiguous()
    assert not optimizer.state[model.conv1.weight]["exp_avg"].is_contiguous()
    assert loaded["model"]._metadata == checkpoint["model"]._metadata
    assert_same_weights(model, load_model(str(path))[0])


def test_resuming_fused_adam_from_a_contiguous_checkpoint_equals_the_uninterrupted_run(tmp_path):
    model, optimizer = trained_channels_last()
    path = tmp_path / "last.pt"
    save_checkpoint(str(path), {"model": model.state_dict(), "optimizer": optimizer.state_dict()})
    channels_last_training_step(model, optimizer, seed=2)

    saved = torch.load(path, weights_only=True)
    resumed = tiny(2).to(memory_format=torch.channels_last).train()
    resumed.load_state_dict(saved["model"])
    resumed_optimizer = build_optimizer(resumed, "adam", lr=1e-4, weight_decay=0.0)
    load_optimizer_state(resumed_optimizer, saved["optimizer"])
    assert resumed_optimizer.state[resumed.conv1.weight]["exp_avg"].stride() == resumed.conv1.weight.stride()
    channels_last_training_step(resumed, resumed_optimizer, seed=2)
    assert_same_weights(model, resumed)
