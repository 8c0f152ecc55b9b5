"""Train the two face decoders of `aletheia.data.face_decoder` on the real faces of a training config's split.

    .venv/bin/python scripts/train_face_decoder.py --config configs/default_model_lite2_sg3_out.yaml \
        --data outputs/default-model/prepared-fast --output outputs/face-decoders.pth [--minutes 5]

Only the training split's real faces are used (the config's split, its excluded sources left out), on random
128-pixel patches at the crops' own scale; each decoder trains for `--minutes`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from aletheia.data.face_decoder import PATCH, UPSAMPLERS, save_decoders, train_decoder
from aletheia.training.config import TrainConfig
from aletheia.training.loop import load_training_faces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="training config whose split and exclusions decide the faces")
    parser.add_argument("--data", required=True, nargs="+", help="prepared face folders")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--minutes", type=float, default=5.0, help="per decoder")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = TrainConfig.from_yaml(args.config, data=args.data, output=str(args.output.parent))
    train, _ = load_training_faces(config)
    reals = train[(train["label"] == "real") & (train["crop_size"] >= PATCH)]
    paths = reals["crop"].tolist()
    print(f"{len(paths)} real training crops from {reals['source'].nunique()} sources")
    models = {
        kind: train_decoder(kind, paths, minutes=args.minutes, batch=args.batch, seed=args.seed)
        for kind in UPSAMPLERS
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_decoders(models, str(args.output))
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
