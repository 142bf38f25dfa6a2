"""Looking at models on images: predict (top-5 by name) and cam (class activation maps)."""

from __future__ import annotations

import argparse

from compscale.commands._util import print_json, render_table


def _load(args: argparse.Namespace):
    """The model with its weights (a weights file — MODEL itself or --weights — or the packaged pretrained
    ones), its preprocessing, and its resolved reference (name, class names)."""
    from compscale.compound import check_model_size
    from compscale.errors import UserError
    from compscale.models.registry import ModelReference
    from compscale.models.weights import build_reference, read_metadata, reference_with_weights
    from compscale.pretrained import PRETRAINED, Preprocess, pretrained

    if args.weights is None and args.model in PRETRAINED:
        model = pretrained(args.model)
        return model, model.preprocess, ModelReference(model.spec, None, args.model)
    # The reference and the file's metadata are checked before anything is built: its spec (every field, and its
    # size against the ceiling), its class names and its preprocessing (the input side, the normalisation).
    ref = reference_with_weights(args.model, args.weights)
    if ref.weights is None:
        raise UserError(f"{args.model} has no packaged weights: pass --weights FILE, or a weights file as MODEL "
                        f"(packaged: {', '.join(PRETRAINED)})")
    spec, meta = ref.spec, read_metadata(ref.weights)
    if "preprocess" in meta:
        try:
            preprocess = Preprocess.from_json(meta["preprocess"])
        except UserError as err:
            raise UserError(f"{ref.weights}: {err}") from None
        if preprocess.in_chans != spec.in_chans:
            raise UserError(f"{ref.weights}: its preprocess gives {preprocess.in_chans} channel(s), the model takes "
                            f"{spec.in_chans}")
    else:
        preprocess = Preprocess(resolution=spec.resolution, crop_pct=1.0, in_chans=spec.in_chans)
    check_model_size(spec.replace(resolution=preprocess.resolution))
    return build_reference(ref), preprocess, ref


def cmd_predict(args: argparse.Namespace) -> int:
    from compscale.pretrained import predict

    model, preprocess, ref = _load(args)
    rows = predict(model, preprocess(args.image), topk=args.topk, names=ref.classes)
    if args.json:
        print_json({"model": args.model, "image": args.image, "top": rows})
    else:
        print(render_table(rows, [("index", "class", str), ("name", "name", str),
                                  ("prob", "prob", lambda v: f"{v:.3f}")]))
    return 0


def cmd_cam(args: argparse.Namespace) -> int:
    import numpy as np

    from compscale.analysis.cam import activation_map, save_cam_figure
    from compscale.pretrained import predict

    model, preprocess, ref = _load(args)
    x = preprocess(args.image)
    top = predict(model, x, topk=5, names=ref.classes)
    result = activation_map(model, x, args.target, args.method)
    crop = preprocess.crop(args.image).permute(1, 2, 0).squeeze(-1).numpy().astype(np.uint8)
    caption = [f"{r['name'][:28]} {r['prob']:.2f}" for r in top]
    target = ref.classes[result.target] if ref.classes else f"class {result.target}"
    save_cam_figure(args.out, [(f"{ref.name} ({args.method}, {target[:28]})", crop, result.map, caption)])
    if args.json:
        print_json({"model": args.model, "method": args.method, "target": result.target, "out": args.out,
                    "top": top})
    else:
        named = f" ({ref.classes[result.target]})" if ref.classes else ""
        print(f"wrote {args.out}: {args.method} for class {result.target}{named} ({top[0]['name']} is top-1)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    for name, func, help_text in (("predict", cmd_predict, "top-5 classes of an image, by name"),
                                  ("cam", cmd_cam, "class activation map of an image, overlaid, as PNG")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("model", help="a registered name, a spec file, a weights file saved by compscale (its "
                                     "spec, weights and class names), or module:name")
        p.add_argument("--image", required=True, help="an image file, or skimage:NAME (chelsea, coffee, ...)")
        p.add_argument("--weights", help="a weights file (default: the packaged pretrained weights)")
        p.add_argument("--json", action="store_true")
        if name == "predict":
            p.add_argument("--topk", type=int, default=5)
        else:
            p.add_argument("--method", choices=("cam", "gradcam", "gradcam++"), default="cam")
            p.add_argument("--target", type=int, help="class index (default: the predicted class)")
            p.add_argument("--out", required=True, help="PNG file to write")
        p.set_defaults(func=func)
