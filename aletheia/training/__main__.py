"""Multi-process training without MLRun tracking: `torchrun --nproc_per_node N -m aletheia.training --config cfg.yaml`.

DDP uses gloo on CPU and NCCL on GPU; rank 0 validates and writes checkpoints into the config's output folder.
"""

import argparse

from aletheia.training.config import TrainConfig
from aletheia.training.loop import train

parser = argparse.ArgumentParser(prog="python -m aletheia.training")
parser.add_argument("--config", required=True, help="YAML training config")
args = parser.parse_args()
train(TrainConfig.from_yaml(args.config), progress=False)
