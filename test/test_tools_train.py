"""lseg-train on a tiny model and a synthetic coloured-shapes dataset (docs/model.md §4.1).

Figures seen when this was written (tiny_vit, seed 0, 16 images 64x64, batch 8, 20 epochs =
40 iterations, base lr 0.05): loss 1.50 -> 0.275, training mIoU 0.225 -> 0.709 (chance 1/3),
20-55 s on 2 shared CPU cores. The run is deterministic on the CPU. Other seeds draw another
random (untrained) text tower; where two label embeddings come out nearly parallel (cos 0.9)
the shapes are learnt more slowly (seed 1: mIoU 0.45 after 40 iterations, 0.55 after 60).
"""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("lseg_ros.model")
from lseg_ros.model import LSegNet  # noqa: E402
from lseg_ros.tools import train, train_setup  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from tools_synth import make_shapes  # noqa: E402


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp("shapes") / "d", 16)


def history(run):
    return json.loads((run / "history.json").read_text())


@pytest.mark.timeout(240)
def test_training_learns_shapes(shapes, tmp_path):
    run = tmp_path / "run"
    rc = train.main(["--data", str(shapes), "--config", "tiny_vit", "--crop-size", "64",
                     "--batch-size", "8", "--epochs", "20", "--base-lr", "0.05", "-o", str(run)])
    assert rc == 0
    h = history(run)
    first, last = h[0], h[-1]
    print(f"loss {first['loss']:.3f} -> {last['loss']:.3f}; train mIoU {first['train_miou']:.3f} -> "
          f"{last['train_miou']:.3f}")
    assert last["iteration"] == 40
    assert np.mean([r["loss"] for r in h[-3:]]) < 0.5 * first["loss"]
    assert max(r["train_miou"] for r in h[-3:]) > 0.5          # chance: 1/3
    for f in ("last.safetensors", "best.safetensors", "last.state.pt", "curves.png"):
        assert (run / f).is_file(), f
    net = LSegNet.from_checkpoint(run / "best.safetensors")     # own format, loadable
    assert net.config.out_dim == 32


def test_resume_continues_where_it_stopped(shapes, tmp_path, capsys):
    common = ["--data", str(shapes), "--config", "tiny_vit", "--crop-size", "64", "--batch-size", "8",
              "--epochs", "2", "--base-lr", "0.05"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert train.main(common + ["-o", str(straight)]) == 0

    # stop after one epoch (as an interruption would), then resume
    args = train.build_parser().parse_args(common + ["-o", str(split)])
    net = train_setup.build_model(args)
    opts = train.TrainOptions(epochs=2, batch_size=8, base_lr=0.05, crop_size=64, class_names=[])
    ds = train.FolderDataset(shapes)
    opts.class_names = ds.class_names
    items, load = train_setup.folder_items(ds)
    data = train_setup._TorchData(items, load, train.TrainTransform(64, 255, seed=0), net.config.mean,
                            net.config.std)
    trainer = train.Trainer(net, data, opts, split)
    trainer.fit(stop_after=1)
    assert history(split)[-1]["iteration"] == 2
    # (a Trainer built by hand does not record the data path; the CLI does)
    assert train.main(["--data", str(shapes), "--resume", str(split)]) == 0

    a, b = history(straight), history(split)
    assert [r["epoch"] for r in b] == [1, 2] and [r["iteration"] for r in b] == [2, 4]
    for ra, rb in zip(a, b):        # the resumed run repeats the uninterrupted one
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-4, abs=1e-5)
    state = torch.load(split / "last.state.pt", weights_only=True)
    assert state["epoch"] == 2 and state["iteration"] == 4
    assert state["scheduler"]["last_epoch"] == 4
    wa = LSegNet.from_checkpoint(straight / "last.safetensors").state_dict()
    wb = LSegNet.from_checkpoint(split / "last.safetensors").state_dict()
    assert max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa) < 1e-4

    # a finished run does not train further; a run folder is not silently overwritten
    capsys.readouterr()
    assert train.main(common + ["-o", str(split)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert train.main(["--resume", str(straight), "--epochs", "3"]) == 2       # schedule planned for 2
    assert "--epochs 2" in capsys.readouterr().err
    assert train.main(["--resume", str(straight)]) == 0    # data path remembered; nothing left to do
    assert len(history(straight)) == 2


def test_zero_shot_two_way_and_lr_groups(shapes, tmp_path):
    args = train.build_parser().parse_args(["--data", str(shapes), "--config", "tiny_vit"])
    net = train_setup.build_model(args)
    groups = train_setup.param_groups(net, 0.01, 10)
    assert [g["lr"] for g in groups] == [0.01, pytest.approx(0.1)]
    assert not any(p.requires_grad for p in net.text.parameters())
    n_trainable = sum(p.numel() for g in groups for p in g["params"])
    assert n_trainable == sum(p.numel() for n, p in net.named_parameters() if not n.startswith("text."))

    ds = train.FolderDataset(shapes)
    items, load = train_setup.zero_shot_items_folder(ds)
    assert len(items) == 3 * len(ds)                   # each image asks about each present class
    image, target, cls = load(items[1])
    assert set(np.unique(target)) <= {0, 1} and cls == 1
    opts = train.TrainOptions(epochs=1, batch_size=4, crop_size=64, zero_shot=True, class_names=ds.class_names)
    data = train_setup._TorchData(items[:8], load, train.TrainTransform(64), net.config.mean, net.config.std)
    tr = train.Trainer(net, data, opts, tmp_path / "zs")
    assert tr.text.shape[0] == 4                        # 'others' + 3 classes, encoded once
    x, y, c = next(iter(tr._loader(data, False, 0)))
    logits = tr._logits(x, c)
    assert logits.shape == (4, 2, 64, 64)
    full = net(x, tr.text)
    for i in range(4):   # channel 0 = 'others', channel 1 = the sample's own class
        torch.testing.assert_close(logits[i, 1], full[i, c[i] + 1])
        torch.testing.assert_close(logits[i, 0], full[i, 0])
    tr.fit()
    assert history(tmp_path / "zs")[0]["iteration"] == 2


def test_optimizer_lrs_follow_the_reference(shapes, tmp_path):
    """lr = base_lr/16*batch for pretrained.*, 10x for scratch.*, poly decay per iteration."""
    args = train.build_parser().parse_args(["--data", str(shapes), "--config", "tiny_vit"])
    net = train_setup.build_model(args)
    ds = train.FolderDataset(shapes)
    items, load = train_setup.folder_items(ds)
    opts = train.TrainOptions(epochs=3, batch_size=4, base_lr=0.004, crop_size=64, class_names=ds.class_names)
    data = train_setup._TorchData(items[:8], load, train.TrainTransform(64), net.config.mean, net.config.std)
    tr = train.Trainer(net, data, opts, tmp_path / "lr")
    base = 0.004 / 16 * 4
    groups = {g["name"]: g for g in tr.optimizer.param_groups}
    assert groups["pretrained"]["lr"] == pytest.approx(base) and groups["scratch"]["lr"] == pytest.approx(10 * base)
    ids = {id(p) for g in tr.optimizer.param_groups for p in g["params"]}
    assert all(id(p) in ids for n, p in net.named_parameters() if n.startswith("pretrained."))
    assert {id(p) for p in groups["scratch"]["params"]} == {id(p) for n, p in net.named_parameters()
                                                             if n.startswith("scratch.")}
    assert tr.max_iters == 6
    tr.fit(stop_after=1)
    k = tr.iteration
    assert k == 2
    decay = (1 - k / tr.max_iters) ** 0.9
    assert groups["pretrained"]["lr"] == pytest.approx(base * decay)
    assert groups["scratch"]["lr"] == pytest.approx(10 * base * decay)


def test_zero_shot_logits_use_exactly_two_labels(tmp_path):
    """With a spatial block (which mixes labels) the 2-way logits are those of a forward with
    only ['others', c], not a slice of the all-labels forward."""
    from lseg_ros.model import LSegConfig

    torch.manual_seed(0)
    net = LSegNet.from_config(LSegConfig.tiny_vit(spatial_block="bottleneck", block_depth=2))
    names = ["red square", "green circle", "blue thing"]
    opts = train.TrainOptions(epochs=1, batch_size=2, crop_size=64, zero_shot=True, class_names=names)
    tr = train.Trainer(net, [0], opts, tmp_path / "zs")
    net.eval()
    x = torch.randn(2, 3, 64, 64)
    cls = torch.tensor([2, 0])
    with torch.no_grad():
        logits = tr._logits(x, cls)
        full = net(x, tr.text)
    assert logits.shape == (2, 2, 64, 64)
    for i, c in enumerate(cls.tolist()):
        with torch.no_grad():
            alone = net(x[i:i + 1], tr.text[[0, c + 1]])[0]
        torch.testing.assert_close(logits[i], alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(logits[0, 1], full[0, 3], atol=1e-3)   # the old gather was not this


def test_corrupt_state_file_is_named(shapes, tmp_path, capsys):
    run = tmp_path / "run"
    assert train.main(["--data", str(shapes), "--config", "tiny_vit", "--crop-size", "64", "--batch-size", "8",
                       "--epochs", "2", "-o", str(run)]) == 0
    good = (run / "last.state.pt").read_bytes()
    (run / "last.state.pt").write_bytes(good[: len(good) // 2])
    capsys.readouterr()
    assert train.main(["--resume", str(run)]) == 2
    assert "last.state.pt" in capsys.readouterr().err
    torch.save({"version": 1, "options": {}}, run / "last.state.pt")      # readable, but keys missing
    assert train.main(["--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "last.state.pt" in err and "damaged" in err


def test_cli_errors(tmp_path, capsys):
    assert train.main(["--data", str(tmp_path), "--config", "tiny_vit", "-o", str(tmp_path / "r")]) == 2
    assert "images" in capsys.readouterr().err
    assert train.main(["--resume", str(tmp_path / "nothing")]) == 2
    assert "no training state" in capsys.readouterr().err


def test_fold_training_split(tmp_path):
    """Zero-shot training reads HSNet's trn split of a fold and refuses test-fold classes."""
    import cv2

    root, splits = tmp_path / "data", tmp_path / "splits"
    (root / "VOC2012" / "JPEGImages").mkdir(parents=True)
    (root / "VOC2012" / "SegmentationClassAug").mkdir(parents=True)
    (splits / "pascal" / "trn").mkdir(parents=True)
    mask = np.zeros((32, 48), np.uint8)
    mask[5:20, 5:20] = 6          # bus (0-based 5): a training class of fold 0
    mask[25:, :] = 15             # person
    mask[0, :] = 255
    cv2.imwrite(str(root / "VOC2012" / "JPEGImages" / "x.jpg"), np.zeros((32, 48, 3), np.uint8))
    cv2.imwrite(str(root / "VOC2012" / "SegmentationClassAug" / "x.png"), mask)
    (splits / "pascal" / "trn" / "fold0.txt").write_text("x__06\nx__15\n")
    items, load = train_setup.zero_shot_items_fold("pascal", 0, root, splits)
    image, target, cls = load(items[0])
    assert cls == 5 and (target == 1).sum() == 15 * 15 and set(np.unique(target)) == {0, 1, 255}
    assert (target[0] == 255).all() and (target[25:] == 0).all()
    # the loss's ignore index is what is written for the boundary
    items, load = train_setup.zero_shot_items_fold("pascal", 0, root, splits, ignore_index=-1)
    _, target, _ = load(items[0])
    assert (target[0] == -1).all() and set(np.unique(target)) == {-1, 0, 1}
    (splits / "pascal" / "trn" / "fold0.txt").write_text("x__01\n")        # aeroplane: a test class
    with pytest.raises(train.ToolError, match="fold0.txt.*test classes"):
        train_setup.zero_shot_items_fold("pascal", 0, root, splits)


def test_coco_fold_training_has_no_ignored_value(tmp_path):
    """HSNet's COCO reader has no boundary value: 255 is background there (PASCAL only ignores it)."""
    import pickle

    import cv2

    root, splits = tmp_path / "data", tmp_path / "splits"
    (root / "COCO2014" / "annotations" / "train2014").mkdir(parents=True)
    (splits / "coco" / "trn").mkdir(parents=True)
    mask = np.zeros((32, 48), np.uint8)
    mask[5:20, 5:20] = 2          # bicycle (0-based 1): a training class of fold 0
    mask[0, :] = 255
    (root / "COCO2014" / "train2014").mkdir(parents=True)
    cv2.imwrite(str(root / "COCO2014" / "train2014" / "x.jpg"), np.zeros((32, 48, 3), np.uint8))
    cv2.imwrite(str(root / "COCO2014" / "annotations" / "train2014" / "x.png"), mask)
    with open(splits / "coco" / "trn" / "fold0.pkl", "wb") as f:
        pickle.dump({1: ["train2014/x.jpg"]}, f)
    items, load = train_setup.zero_shot_items_fold("coco", 0, root, splits)
    _, target, cls = load(items[0])
    assert cls == 1 and (target == 1).sum() == 15 * 15 and set(np.unique(target)) == {0, 1}


def test_imagenet_and_text_init_files(tmp_path):
    """--backbone-weights takes torchvision/timm state dicts; --text-weights OpenAI CLIP names."""
    import torchvision

    args = train.build_parser().parse_args(["--data", "x", "--config", "tiny_resnet"])
    net = train_setup.build_model(args)
    tv = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1])
    torch.save(tv.state_dict(), tmp_path / "rn.pth")                 # includes fc.*: dropped
    train_setup.load_backbone_weights(net, tmp_path / "rn.pth")
    torch.testing.assert_close(net.pretrained.layer1[0].weight, tv.conv1.weight)
    torch.testing.assert_close(net.pretrained.layer1[4][0].conv1.weight, tv.layer1[0].conv1.weight)
    torch.testing.assert_close(net.pretrained.layer4[0].bn2.running_var, tv.layer4[0].bn2.running_var)
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(train.ToolError, match="bad.pth.*missing"):
        train_setup.load_backbone_weights(net, tmp_path / "bad.pth")

    sd = {k: v + 1 for k, v in net.text.tower.state_dict().items() if v.is_floating_point()}
    sd.update({"visual.proj": torch.zeros(2), "logit_scale": torch.tensor(4.6)})
    torch.save(sd, tmp_path / "clip.pt")
    train_setup.load_text_weights(net, tmp_path / "clip.pt")
    k = "token_embedding.weight"
    torch.testing.assert_close(net.text.tower.state_dict()[k], sd[k])
    assert not any(p.requires_grad for p in net.text.parameters())

    # safetensors, recognised by content whatever the extension
    from safetensors.torch import save_file
    save_file({k: (v + 2).contiguous() for k, v in net.text.tower.state_dict().items()}, str(tmp_path / "clip.bin"))
    before = net.text.tower.state_dict()[k].clone()
    train_setup.load_text_weights(net, tmp_path / "clip.bin")
    torch.testing.assert_close(net.text.tower.state_dict()[k], before + 2)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated
def test_text_weights_from_released_ckpt_and_torchscript(tmp_path):
    """A released LSeg .ckpt (Lightning callbacks, fp16 CLIP) is read through the restricted
    unpickler; OpenAI CLIP's TorchScript .pt is refused with a clear message, never run."""
    import synthetic_ckpt

    args = train.build_parser().parse_args(["--data", "x", "--config", "tiny_vit"])
    from lseg_ros.model import LSegConfig

    torch.manual_seed(1)
    donor = LSegNet.from_config(LSegConfig.tiny_vit())
    ckpt = synthetic_ckpt.released_from_net(donor, tmp_path / "demo_like.ckpt")
    torch.manual_seed(2)
    net = train_setup.build_model(args)
    train_setup.load_text_weights(net, ckpt)
    k = "token_embedding.weight"
    torch.testing.assert_close(net.text.tower.state_dict()[k], donor.text.tower.state_dict()[k].half().float())

    ts = tmp_path / "ViT-B-32.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(ts))
    with pytest.raises(train.ToolError, match="ViT-B-32.pt.*TorchScript.*state-dict"):
        train_setup.load_text_weights(net, ts)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(train.ToolError, match="junk.pt"):
        train_setup.load_backbone_weights(net, tmp_path / "junk.pt")


def test_batches_are_the_one_process_order_split_over_ranks():
    """The sampler gives a one-process run the order DataLoader(shuffle=True, generator) gave (runs made
    before sharding repeat), and N ranks together the same global batches, split in contiguous parts."""
    from lseg_ros.tools.distributed import GlobalBatchSampler, Ranks

    data = list(range(11))
    for epoch in range(3):
        def gen():
            return torch.Generator().manual_seed(7 * 100003 + epoch)
        old = [b.tolist() for b in torch.utils.data.DataLoader(data, batch_size=4, shuffle=True, generator=gen())]
        g = gen()
        new = list(torch.utils.data.DataLoader(data, batch_sampler=GlobalBatchSampler(11, 4, generator=g),
                                               generator=g, collate_fn=list))
        assert new == old
        for world in (2, 3, 4):
            g = [gen() for _ in range(world)]
            parts = [list(torch.utils.data.DataLoader(data, batch_sampler=GlobalBatchSampler(11, 4, Ranks(r, world), g[r]),
                                                      generator=g[r], collate_fn=list)) for r in range(world)]
            assert all(len(p) == 3 for p in parts)                     # every rank steps every time
            for k, batch in enumerate(old):
                shares = [p[k] for p in parts]
                assert sum(shares, []) == batch
                assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert list(GlobalBatchSampler(5, 4, Ranks(1, 2))) == [[2, 3], []]  # no shuffle: 0..n-1; a short last batch


def test_grad_checkpoint_gives_the_same_step():
    """--grad-checkpoint recomputes the ViT blocks in the backward pass: same loss, same gradients."""
    from lseg_ros.model import LSegConfig

    torch.manual_seed(0)
    net = LSegNet.from_config(LSegConfig.tiny_vit()).train()
    x, text = torch.randn(2, 3, 64, 64), torch.randn(3, 32)
    grads, runs = [], []
    net.pretrained.model.blocks[1].register_forward_pre_hook(lambda *a: runs.append(1))
    for on in (False, True):
        net.pretrained.set_grad_checkpointing(on)
        net.zero_grad()
        runs.clear()
        net(x, text).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None})
        assert len(runs) == (2 if on else 1)         # checkpointed: run again in the backward pass
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-5, atol=1e-7)
    with torch.no_grad():                       # inference never checkpoints
        net(x, text)


def test_every_trained_parameter_gets_a_gradient(shapes):
    """DDP waits for the gradient of every trainable parameter: the modules the forward never runs
    (timm's head and final norm, refinenet4's first unit) are frozen, the text tower too."""
    for config in ("tiny_vit", "tiny_resnet"):
        args = train.build_parser().parse_args(["--data", str(shapes), "--config", config])
        net = train_setup.build_model(args)
        groups = train_setup.param_groups(net, 0.01, 10)
        net.train()
        net(torch.randn(2, 3, 64, 64), torch.randn(3, 32)).sum().backward()
        trained = [n for n, p in net.named_parameters() if p.requires_grad]
        assert trained and all(p.grad is not None for p in net.parameters() if p.requires_grad)
        assert not any(n.startswith("text.") or "refinenet4.resConfUnit1" in n for n in trained)
        assert all(p.grad is None for m in net.unused_modules() for p in m.parameters())
        in_groups = {id(p) for g in groups for p in g["params"]}
        assert all(id(p) in in_groups for m in net.unused_modules() for p in m.parameters())   # states load


def test_amp_and_batch_choices(shapes, tmp_path, capsys, monkeypatch):
    cpu = torch.device("cpu")
    assert train_setup.resolve_amp("auto", cpu) == "off" and train_setup.resolve_amp("off", cpu) == "off"
    with pytest.raises(train.ToolError, match="--amp bf16 needs a CUDA device"):
        train_setup.resolve_amp("bf16", cpu)
    common = ["--data", str(shapes), "--config", "tiny_resnet", "--crop-size", "64", "--epochs", "1"]
    assert train.main(common + ["--grad-checkpoint", "-o", str(tmp_path / "r")]) == 2
    assert "ResNet backbone has none" in capsys.readouterr().err
    # what torchrun sets for the second of two processes: refused before any process group is joined
    for k, v in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(k, v)
    assert train.main(common + ["--batch-size", "5", "-o", str(tmp_path / "r")]) == 2
    assert "--batch-size 5 (the global batch) does not divide by the 2 processes" in capsys.readouterr().err
