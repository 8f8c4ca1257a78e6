"""``lseg-evaluate``: mIoU, pixel accuracy and FB-IoU as in the paper (docs/model.md §3, §4.2).

Two modes:

* Folder dataset (``--data DIR``): every image segmented with the class names as labels
  (single pass, or ``--protocol reference`` for the multi-scale + flip evaluation of docs/model.md §3.2);
  a dataset-wide confusion matrix gives per-class IoU, mIoU and pixel accuracy (conventions in
  ``metrics``).
* Zero-shot folds (``--benchmark pascal|coco --fold i``): HSNet's test split and 1000 episodes;
  each query image is resized to 480×480 (aspect not kept, docs/model.md §3.3), its mask
  nearest-resized alike; the model is run with exactly the labels ['others', class]; argmax
  of the 2 channels; HSNet's mIoU and FB-IoU (docs/model.md §4.2). PASCAL's boundary pixels (255) are
  ignored; COCO has no ignored value (as in HSNet). ``--original-size`` scores at the mask's own size instead (logits resized).

Results: a table on stdout, ``results.json`` and (folder mode) ``confusion.png`` in ``--output``;
``results.json`` records ``world_size`` and ``images`` (images scored; episodes in fold mode).

Under ``torchrun`` (distributed.py) each process scores every world_size-th image (episode) and the
confusion matrices (per-class areas) are summed across processes: integer counts, so the numbers
equal the one-process ones exactly. Rank 0 prints and writes.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from lseg_ros.tools import distributed, folds
from lseg_ros.tools.common import ToolError, add_common_args, build_predictor, cli, progress
from lseg_ros.tools.data import DataError, FolderDataset, read_class_names, read_pair
from lseg_ros.tools.distributed import Ranks
from lseg_ros.tools.metrics import ConfusionMatrix, FewShotMeter, plot_confusion

log = logging.getLogger(__name__)

ZS_SIZE = 480


def _gather_skipped(skipped: list[tuple[int, str]], ranks: Ranks) -> list[str]:
    """Every rank's (index, reason) of skipped samples, in index order (as one process lists them)."""
    return [reason for _, reason in sorted(x for part in distributed.all_gather(skipped, ranks) for x in part)]


def evaluate_folder(predictor, ds: FolderDataset, label_texts: Sequence[str] | None = None,
                    protocol: str = "single", skip_bad: bool = False,
                    ranks: Ranks | None = None) -> tuple[ConfusionMatrix, list[str]]:
    """Confusion matrix of the predictor over a folder dataset; returns (matrix, skipped). With
    ``ranks`` of a torchrun job: this rank's share of the images, the matrix summed over ranks."""
    ranks = ranks or Ranks()
    texts = list(label_texts or ds.class_names)
    if len(texts) != ds.num_classes:
        raise ToolError(f"{len(texts)} label texts for {ds.num_classes} classes")
    labels = predictor.encode_labels(texts)
    cm = ConfusionMatrix(ds.num_classes, ds.ignore_index)
    skipped = []
    for i in progress(distributed.shard(range(len(ds)), ranks), desc="evaluate", unit="img", enabled=ranks.main):
        try:
            image, mask = ds.load(i)
        except DataError as e:
            if not skip_bad:
                raise ToolError(f"{e} (use --skip-bad to skip and count such samples)") from None
            log.warning("skipping: %s", e)
            skipped.append((i, str(e)))
            continue
        pred = predictor.predict(image, labels, channel_order="rgb", protocol=protocol)
        cm.update(pred.mask, mask, str(ds.samples[i].mask_path))
    cm.matrix = distributed.all_sum(cm.matrix, ranks)
    if cm.total == 0:
        raise ToolError("no labelled pixels were evaluated")
    return cm, _gather_skipped(skipped, ranks)


def evaluate_fold(predictor, benchmark: str, fold: int, root: Path, splits: Path, episodes: int = 1000,
                  seed: int = 0, original_size: bool = False, skip_bad: bool = False,
                  ignore_index: int = folds.IGNORE_INDEX, ranks: Ranks | None = None):
    """HSNet zero-shot test of one fold; returns (meter, skipped). With ``ranks``: this rank's share of
    the episodes, the per-class areas summed over ranks."""
    ranks = ranks or Ranks()
    names = folds.class_names(benchmark)
    class_ids = folds.fold_classes(benchmark, fold, "val")
    items = folds.read_split(benchmark, fold, "val", splits)
    stray = sorted({e.class_id for e in items} - set(class_ids))
    if stray:
        raise ToolError(f"{folds.split_path(benchmark, fold, 'val', splits)}: the {benchmark} fold {fold} test "
                        f"split names classes {stray} outside the fold {class_ids}")
    # an episode's model input is exactly ['others', class] (docs/model.md §1.8), each pair encoded once
    labels = {c: predictor.encode_labels(["others", names[c]]) for c in class_ids}
    boundary = folds.boundary_value(benchmark)
    meter_ignore = ignore_index if boundary is not None else None
    meter = FewShotMeter(class_ids)
    skipped = []
    drawn = list(enumerate(folds.sample_episodes(benchmark, items, episodes, seed)))
    for k, ep in progress(distributed.shard(drawn, ranks), desc=f"fold {fold}", unit="ep", enabled=ranks.main):
        img_path, mask_path = folds.image_and_mask_paths(benchmark, root, ep.name)
        try:
            image, mask = read_pair(img_path, mask_path)
        except DataError as e:
            if not skip_bad:
                raise ToolError(f"{e} (use --skip-bad to skip and count such episodes)") from None
            skipped.append((k, str(e)))
            continue
        target = folds.binary_target(mask, ep.class_id, ignore_index, boundary)
        x = cv2.resize(image, (ZS_SIZE, ZS_SIZE), interpolation=cv2.INTER_LINEAR)
        logits = predictor.logits(x, labels[ep.class_id], channel_order="rgb")
        if original_size:
            import torch.nn.functional as F

            logits = F.interpolate(logits[None], size=mask.shape, mode="bilinear", align_corners=True)[0]
        else:
            target = cv2.resize(target.astype(np.int32), (ZS_SIZE, ZS_SIZE), interpolation=cv2.INTER_NEAREST)
        pred = logits.argmax(0).cpu().numpy()
        meter.update(pred, target, ep.class_id, meter_ignore, str(mask_path))
    if ranks.launched:      # per-class areas (whole pixel counts) and episodes, summed over ranks
        areas = distributed.all_sum(np.array([[meter.inter[c], meter.union[c]] for c in class_ids]), ranks)
        meter.inter, meter.union = ({c: areas[j, i] for j, c in enumerate(class_ids)} for i in (0, 1))
        meter.episodes = int(distributed.all_sum(np.array([meter.episodes]), ranks)[0])
    if meter.episodes == 0:
        raise ToolError("no episode could be evaluated")
    return meter, _gather_skipped(skipped, ranks)


def _fmt(x) -> str:
    return "   n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:6.2f}"


def folder_report(cm: ConfusionMatrix, names: Sequence[str]) -> tuple[str, dict]:
    s = cm.summary(names)
    width = max(12, *(len(n) for n in names))
    lines = [f"{'class':<{width}}    IoU%   acc%   gt pixels"]
    acc = cm.class_accuracy()
    gt = cm.matrix.sum(1)
    for i, n in enumerate(names):
        lines.append(f"{n:<{width}}  {_fmt(s['per_class_iou'][n])}  {_fmt(float(acc[i]))}  {int(gt[i]):>10d}")
    lines.append(f"{'mIoU':<{width}}  {_fmt(s['miou'])}   (mean over {int(np.sum(~np.isnan(cm.iou())))} classes "
                 "present in ground truth or prediction)")
    lines.append(f"{'pixel acc.':<{width}}  {_fmt(s['pixel_accuracy'])}")
    return "\n".join(lines), s


def fold_report(meter: FewShotMeter, names: Sequence[str]) -> tuple[str, dict]:
    per = meter.per_class_iou()
    lines = [f"{'class':<14} IoU%"] + [f"{names[c]:<14} {100 * v:5.2f}" for c, v in per.items()]
    lines += [f"{'mIoU':<14} {meter.miou():5.2f}", f"{'FB-IoU':<14} {meter.fb_iou():5.2f}",
              f"({meter.episodes} episodes)"]
    result = {"miou": meter.miou(), "fb_iou": meter.fb_iou(), "episodes": meter.episodes,
              "per_class_iou": {names[c]: 100 * v for c, v in per.items()}}
    return "\n".join(lines), result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lseg-evaluate",
        description="Evaluate LSeg: mIoU / pixel accuracy on a folder dataset, or the zero-shot fold protocol.",
        epilog="examples:\n"
               "  lseg-evaluate --data val/ -w model.safetensors -o eval/\n"
               "  lseg-evaluate --benchmark pascal --fold 0 --data VOCROOT --splits hsnet/data/splits \\\n"
               "      -w pascal_fold0.ckpt -o eval_f0/\n\n"
               "folder layout: DIR/images/*.jpg|png, DIR/masks/<same stem>.png (class ids), DIR/classes.txt|yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="folder dataset, or the HSNet data root with --benchmark")
    p.add_argument("-o", "--output", type=Path, help="folder for results.json (and confusion.png)")
    p.add_argument("--classes", type=Path, help="class-name file overriding DATA/classes.*")
    p.add_argument("--label-texts", type=Path, help="texts given to the model, one per class (default: the names)")
    p.add_argument("--ignore-index", type=int, default=255)
    p.add_argument("--protocol", choices=("single", "reference"), default="single",
                   help="single pass, or the reference multi-scale + flip sliding-window protocol (docs/model.md §3.2)")
    p.add_argument("--max-side", type=int, help="single pass: shrink so the long side is at most this")
    p.add_argument("--skip-bad", action="store_true", help="skip and count unreadable/mismatched samples")
    g = p.add_argument_group("zero-shot folds")
    g.add_argument("--benchmark", choices=("pascal", "coco"))
    g.add_argument("--fold", type=int, default=0)
    g.add_argument("--splits", type=Path, help="HSNet data/splits folder")
    g.add_argument("--episodes", type=int, default=folds.DEFAULT_EPISODES)
    g.add_argument("--seed", type=int, default=0, help="COCO episode draw")
    g.add_argument("--original-size", action="store_true", help="score at the mask's size, not 480x480")
    add_common_args(p)
    distributed.add_args(p)
    return p


@cli
def _run(args) -> int:
    with distributed.session(args.device, args.dist_timeout) as ranks:
        return _evaluate(args, ranks)


def _evaluate(args, ranks: Ranks) -> int:
    predictor = build_predictor(args, str(ranks.device), args.max_side)
    if args.benchmark:
        if args.splits is None:
            raise ToolError("--benchmark needs --splits (HSNet's data/splits folder)")
        meter, skipped = evaluate_fold(predictor, args.benchmark, args.fold, args.data, args.splits,
                                       args.episodes, args.seed, args.original_size, args.skip_bad,
                                       args.ignore_index, ranks)
        table, result = fold_report(meter, folds.class_names(args.benchmark))
        result.update(benchmark=args.benchmark, fold=args.fold, images=meter.episodes)
    else:
        ds = FolderDataset(args.data, read_class_names(args.classes) if args.classes else None,
                           args.ignore_index, skip_bad=args.skip_bad)
        texts = read_class_names(args.label_texts) if args.label_texts else None
        if texts is not None and len(texts) != ds.num_classes:
            raise ToolError(f"{args.label_texts}: {len(texts)} label texts for the {ds.num_classes} classes of "
                            f"{args.classes or args.data} (one text per class, in class-id order)")
        cm, skipped = evaluate_folder(predictor, ds, texts, args.protocol, args.skip_bad, ranks)
        table, result = folder_report(cm, ds.class_names)
        result.update(images=len(ds) - len(skipped))
        skipped = ds.skipped + skipped
        if args.output and ranks.main:
            args.output.mkdir(parents=True, exist_ok=True)
            plot_confusion(cm.matrix, ds.class_names, args.output / "confusion.png")
    result.update(weights=str(args.weights) if args.weights else f"config:{args.config}",
                  world_size=ranks.world_size, skipped=len(skipped), skipped_reasons=skipped[:50])
    if not ranks.main:
        return 0
    print(table)
    if skipped:
        print(f"skipped {len(skipped)} bad sample(s); see results.json")
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "results.json").write_text(json.dumps(result, indent=1))
        print(f"results in {args.output}")
    return 0


def main(argv: Iterable[str] | None = None) -> int:
    return _run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
