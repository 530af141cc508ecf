"""One module per verb family; ``archiver.app.main.COMMANDS`` names each command's home."""
