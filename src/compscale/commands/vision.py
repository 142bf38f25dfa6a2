"""Looking at models on images: predict (top-5 by name) and cam (class activation maps)."""

from __future__ import annotations

import argparse
import json

from compscale.commands._util import render_table


def _load(args: argparse.Namespace):
    """The model with its weights (a file, or the packaged pretrained ones) and its preprocessing."""
    from compscale.compound import check_model_size
    from compscale.errors import UserError
    from compscale.models import model_spec
    from compscale.models.weights import model_from_weights, read_metadata, spec_of_weights
    from compscale.pretrained import PRETRAINED, Preprocess, pretrained

    if args.weights is None:
        if args.model not in PRETRAINED:
            model_spec(args.model)  # an unknown name gets its own error first
            raise UserError(f"{args.model} has no packaged weights: pass --weights FILE "
                            f"(packaged: {', '.join(PRETRAINED)})")
        model = pretrained(args.model)
        return model, model.preprocess
    # The file's metadata is checked before anything is built: its spec (every field, and its size against the
    # ceiling) and its preprocessing (the input side the model will run at, the normalisation).
    spec = spec_of_weights(args.weights, args.model)
    meta = read_metadata(args.weights)
    if "preprocess" in meta:
        try:
            preprocess = Preprocess.from_json(meta["preprocess"])
        except UserError as err:
            raise UserError(f"{args.weights}: {err}") from None
        if preprocess.in_chans != spec.in_chans:
            raise UserError(f"{args.weights}: its preprocess gives {preprocess.in_chans} channel(s), the model takes "
                            f"{spec.in_chans}")
    else:
        preprocess = Preprocess(resolution=spec.resolution, crop_pct=1.0, in_chans=spec.in_chans)
    check_model_size(spec.replace(resolution=preprocess.resolution))
    return model_from_weights(args.weights, args.model), preprocess


def cmd_predict(args: argparse.Namespace) -> int:
    from compscale.pretrained import predict

    model, preprocess = _load(args)
    rows = predict(model, preprocess(args.image), topk=args.topk)
    if args.json:
        print(json.dumps({"model": args.model, "image": args.image, "top": rows}))
    else:
        print(render_table(rows, [("index", "class", str), ("name", "name", str),
                                  ("prob", "prob", lambda v: f"{v:.3f}")]))
    return 0


def cmd_cam(args: argparse.Namespace) -> int:
    import numpy as np

    from compscale.analysis.cam import activation_map, save_cam_figure
    from compscale.pretrained import predict

    model, preprocess = _load(args)
    x = preprocess(args.image)
    top = predict(model, x, topk=5)
    result = activation_map(model, x, args.target, args.method)
    crop = preprocess.crop(args.image).permute(1, 2, 0).squeeze(-1).numpy().astype(np.uint8)
    caption = [f"{r['name'][:28]} {r['prob']:.2f}" for r in top]
    save_cam_figure(args.out, [(f"{args.model} ({args.method}, class {result.target})", crop, result.map, caption)])
    if args.json:
        print(json.dumps({"model": args.model, "method": args.method, "target": result.target, "out": args.out,
                          "top": top}))
    else:
        print(f"wrote {args.out}: {args.method} for class {result.target} ({top[0]['name']} is top-1)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    for name, func, help_text in (("predict", cmd_predict, "top-5 classes of an image, by name"),
                                  ("cam", cmd_cam, "class activation map of an image, overlaid, as PNG")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("model")
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
