"""``python -m archiver.train`` = ``archiver train``."""
from ..app.commands.train_cmd import train

if __name__ == "__main__":  # pragma: no cover
    train(prog_name="python -m archiver.train")
