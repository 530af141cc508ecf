"""``python -m archiver_train`` = ``archiver train``."""
from .cli import train

if __name__ == "__main__":  # pragma: no cover
    train(prog_name="python -m archiver_train")
