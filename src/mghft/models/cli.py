"""``mghft models`` and ``mghft convert-official``."""

from __future__ import annotations

import argparse
import json

from mghft.cli_args import local_path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the registered model variants")
    p.add_argument("--json", action="store_true", help="print the resolved configs as JSON")
    p.set_defaults(handler=_models)

    p = sub.add_parser(
        "convert-official",
        help="turn a public-code MGHFT checkpoint (.pth) into a checkpoint folder of this project",
        description="Read a checkpoint of the public MGHFT code (its 'model' dict; opened with weights_only=True, "
        "never executing code), map its keys onto this project's model and write a checkpoint folder "
        "(model.safetensors + config.json).",
    )
    p.add_argument("checkpoint", type=local_path, help="the public code's .pth file")
    p.add_argument("--out", type=local_path, required=True, help="checkpoint folder to write")
    p.add_argument("--model", default="mghft_pvt_small", help="registered variant it was trained as (`mghft models`)")
    p.add_argument(
        "--compat",
        choices=("official", "none"),
        default="official",
        help="official: keep the public code's behaviour (matches how it was trained); none: the corrected model",
    )
    p.add_argument("--class-names", nargs="+", help="label names in output order (default: SER30K's 7)")
    p.add_argument("--with-text-encoder", action="store_true", help="also keep the checkpoint's BERT weights")
    p.set_defaults(handler=_convert)


def _models(args: argparse.Namespace) -> int:
    from mghft.registry import describe_model, get_model_config, list_models

    for name in list_models():
        if args.json:
            print(json.dumps({name: get_model_config(name).to_dict()}))
        else:
            print(f"{name:28s} {describe_model(name)}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from mghft.hub import save_checkpoint
    from mghft.models.factory import load_official
    from mghft.registry import SER30K_CLASSES, get_model_config

    cfg = get_model_config(args.model)
    names = args.class_names or list(SER30K_CLASSES)
    model = load_official(
        args.checkpoint, cfg.replace(num_classes=len(names)), compat=args.compat, text_encoder=args.with_text_encoder
    )
    save_checkpoint(
        model,
        args.out,
        class_names=names,
        extra={"converted_from": str(args.checkpoint)},
        include_text_encoder=args.with_text_encoder,
    )
    print(f"wrote {args.out} ({args.model}, compat={args.compat}, {len(names)} classes)")
    return 0
